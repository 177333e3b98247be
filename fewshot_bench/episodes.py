"""The episodic protocol's harness side: the meta-training query count, and the sampler under its old import path.

The sampler and the episode-source protocol are part of the plugin API
(:mod:`fewshot_bench.api.episodes`), since a dataset plugin provides episode sources; they
are re-exported here so the harness's modules keep importing them from where they always did.
"""

from fewshot_bench.api.episodes import ClassSortedSplit, EpisodeSampler, EpisodeSource, EpisodeStream, cpu_cores

TRAIN_QUERY = 15  # queries per class during meta-training (paper, reference code)

__all__ = ["TRAIN_QUERY", "ClassSortedSplit", "EpisodeSampler", "EpisodeSource", "EpisodeStream", "cpu_cores"]
