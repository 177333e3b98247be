"""LEO and its ablations for fewshot-bench (in progress)."""
