"""Registers the built-in backbones (being written)."""
