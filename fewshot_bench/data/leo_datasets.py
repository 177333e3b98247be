"""Registers the LEO-format embedding datasets mini, tiered and features (being written)."""
