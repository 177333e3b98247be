"""Impostor plugins for the precedence tests: they claim names that belong to fewshot-bench."""
