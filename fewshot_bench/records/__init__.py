"""What a run leaves: the results store, the statistics of its episodes and its provenance."""
