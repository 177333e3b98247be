"""Experiment tracking: a run's parameters and numbers logged to TensorBoard or MLflow, live or from the store."""
