"""The model core: its config, the stream text format, the model, checkpoints (local and hub), the decision policy."""
