"""Running: configs and their validation, building a run, the training loop, run directories, launching many runs
(locally or on Slurm), TensorBoard output."""
