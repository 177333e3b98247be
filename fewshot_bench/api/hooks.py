"""The plugin contract: hook specifications every fewshot-bench plugin implements.

A plugin is a module (or object) registered under the entry-point group ``fewshot_bench``.
It implements any of the hooks below with the ``hookimpl`` marker::

    from fewshot_bench import hookimpl

    @hookimpl
    def fewshot_bench_register_learners(register):
        register(MyLearner)

Each hook receives a ``register`` callback rather than returning values, so one plugin can
provide several things and the harness can attribute each to the distribution it came from.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT_NAME = "fewshot_bench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def fewshot_bench_register_learners(register: Callable[[type], None]) -> None:
    """Register learners: call ``register(LearnerClass)`` once per learner class.

    :param register: Takes a subclass of :class:`fewshot_bench.api.Learner` whose
        ``name`` class attribute is unique among all installed plugins (lower-case letters,
        digits and ``-``). A duplicate name is rejected with an error naming both
        distributions: the project's own distributions (``fewshot-bench``,
        ``fewshot-bench-leo``, ``-metasgd``, ``-maml``) always keep their names; among
        other distributions the first registration wins. A learner's ``predict`` receives
        a :class:`fewshot_bench.api.PredictionBatch` (no query labels, queries unordered) and
        its ``meta_loss`` a labelled :class:`fewshot_bench.api.EpisodeBatch`.
    """


@hookspec
def fewshot_bench_register_datasets(register: Callable[..., None]) -> None:
    """Register feature datasets: call ``register(spec)`` with a ``DatasetSpec``.

    :param register: Takes a :class:`fewshot_bench.data.DatasetSpec`: a unique name, its
        aliases, a one-line description and a ``load(request)`` callable returning a
        :class:`fewshot_bench.data.FeatureDataset`; optionally ``identify(request)``, a
        mapping of each split (those in ``request.splits``; all when None) to a digest of its
        content, read without loading the data (a file's digest kept beside it). The data's
        identity is part of every run key; without ``identify`` the harness loads the
        dataset and hashes its splits' features, class sizes and names. ``crops`` names
        the feature crops it offers (default ``("center",)``): a run's ``--crop`` must be
        one of them.
    """


@hookspec
def fewshot_bench_register_backbones(register: Callable[..., None]) -> None:
    """Register feature backbones (stage 1 of the paper): call ``register(name, factory)``.

    :param register: Takes a unique backbone name (``conv4``, ``resnet12``, ``wrn-28-10``
        are built in) and a ``factory`` (usually the ``nn.Module`` class). The harness calls
        ``factory(in_channels=C, **options)``, where ``options`` are the factory's other
        keyword parameters set with ``--set key=value`` (converted to their annotated types;
        unknown keys are rejected). The module must have an integer ``feature_dim`` and map
        images ``[B, C, H, W]`` (float in [0, 1]) to ``[B, out_dim]`` features for the
        pretraining classifier (``out_dim`` defaults to ``feature_dim``). If it defines
        ``embed(x)``, that gives the exported ``[B, feature_dim]`` features (e.g. an inner
        layer, as WRN-28-10's "layer 21"); otherwise ``forward`` is exported. Export runs
        in eval mode. See :class:`fewshot_bench.backbones.base.Backbone`.
    """
