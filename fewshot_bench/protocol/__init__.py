"""The episodic protocol: a run's spec, meta-training (alone or as a seed population), evaluation, the runner."""
