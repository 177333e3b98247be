"""The harness's built-in datasets, registered through the same hook as third-party ones."""

from __future__ import annotations

from fewshot_bench.api.hooks import RegisterDataset, hookimpl
from fewshot_bench.data import synthetic
from fewshot_bench.data.base import DatasetSpec


@hookimpl
def fewshot_bench_register_datasets(register: RegisterDataset) -> None:
    """Register the embedded default dataset ``synthetic``."""
    register(
        DatasetSpec(
            name="synthetic",
            load=synthetic.load,
            identify=synthetic.identify,
            description="embedded default: deterministic 640-d features, 64/16/20 classes x 600 rows",
        )
    )
