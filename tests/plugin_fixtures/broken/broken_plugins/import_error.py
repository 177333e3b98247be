"""A plugin whose import fails (a dependency that is not installed)."""

import fewshot_bench_missing_dependency  # noqa: F401
