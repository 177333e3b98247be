"""Many runs: sweeps over a grid, their executors (local, Ray) and the stage-2 hyperparameter search."""
