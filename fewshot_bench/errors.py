"""The harness's exception types: errors a user can cause and fix."""


class FewshotBenchError(Exception):
    """An error the user can fix; the CLI prints its one-line message without a traceback."""


class ConfigError(FewshotBenchError):
    """An unknown learner, dataset or option, or an option value of the wrong type."""


class DataError(FewshotBenchError):
    """Missing, corrupt or unsuitable data files, or a split too small for the episodes asked."""


class CheckpointError(DataError):
    """A checkpoint or saved model that is unreadable, truncated, foreign or holds more than tensors and plain data."""


class PluginError(FewshotBenchError):
    """A plugin failed to load or broke the plugin contract."""


class StoreError(FewshotBenchError):
    """The results store is unreadable or is not a fewshot-bench database."""


class WriteError(FewshotBenchError):
    """The harness could not write one of its own files (a checkpoint, a saved model): a full
    disk, a read-only place, a path that is a directory. Never the learner's fault."""


class TrackingError(FewshotBenchError):
    """An experiment tracker (TensorBoard, MLflow) could not take what was logged: its runs stay stored."""


class ConfigValueError(ConfigError, ValueError):
    """A setting's value out of its range: one line on the command line, a ``ValueError`` in Python."""


class ConfigTypeError(ConfigError, TypeError):
    """A setting of the wrong type (a Python caller's): one line on the command line, a ``TypeError`` in Python."""
