"""Broken plugins for the isolation tests: each module fails in its own way."""
