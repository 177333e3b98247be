"""Feature datasets: split -> class -> rows, and the registry entries that load them."""

from fewshot_bench.data.base import DataRequest, DatasetSpec, FeatureDataset, FeatureSplit

__all__ = ["DataRequest", "DatasetSpec", "FeatureDataset", "FeatureSplit"]
