"""The terminal and the logs: progress bars or lines, log records held while a command checks, cached listings."""
