"""Training data: a synthetic activity-video world with exact ground truth (`world`, whose words and narration
templates are `world_language`) and converters from timestamped annotations to streaming conversations
(`streaming`)."""
