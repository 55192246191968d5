"""engine: training. TrainConfig and the named recipes (config), a run's networks (build), lr and
weight-decay schedules (schedules), the loop (train) and its batches (train_data), checkpoints
(checkpoint), logged metrics (metrics), data parallelism (distributed), the device and precision
(device), stop signals (signals) and the progress line (progress). Imports: errors, core and data,
besides its own modules.
"""
