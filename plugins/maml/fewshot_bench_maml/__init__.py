"""MAML for fewshot-bench (in progress)."""
