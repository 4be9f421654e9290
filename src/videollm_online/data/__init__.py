"""Training data: a synthetic activity-video world with exact ground truth (`synth_world`) and converters from
timestamped annotations to streaming conversations (`streaming`)."""
