"""The training library: the resumable custom loop (trainer), losses, optimiser and schedules,
tf.distribute strategies, numeric precision and warm starts. `python -m jlml_tf.train` is the
command over it."""
