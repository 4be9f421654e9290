"""Training: datasets of stream conversations with their frames, and the Trainer-based loop."""
