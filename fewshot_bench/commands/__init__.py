"""Sub-commands of ``fewshot-bench``: each module adds its parsers in ``register(subparsers)``."""
