"""The plugin contract: hook specifications every fewshot-bench plugin implements.

A plugin is a module (or object) registered under the entry-point group ``fewshot_bench``.
It implements any of the hooks below with the ``hookimpl`` marker::

    from fewshot_bench.api import hookimpl

    @hookimpl
    def fewshot_bench_register_learners(register):
        register(MyLearner)

Each hook receives a ``register`` callback rather than returning values, so one plugin can
provide several things and the harness can attribute each to the distribution it came from.
The callbacks' types (:class:`RegisterLearner`, :class:`RegisterDataset`,
:class:`RegisterBackbone`) let a type checker check a plugin's calls.
"""

from __future__ import annotations

from typing import Callable, Protocol

import pluggy
from torch import nn

from fewshot_bench.api.datasets import DatasetSpec
from fewshot_bench.api.learner import Learner

PROJECT_NAME = "fewshot_bench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# What the harness calls a backbone factory with: ``factory(in_channels=C, **options)``.
BackboneFactory = Callable[..., nn.Module]


class RegisterLearner(Protocol):
    """The ``register`` callback of :func:`fewshot_bench_register_learners`."""

    def __call__(self, learner: type[Learner], /) -> None:
        """Register one learner class."""
        ...


class RegisterDataset(Protocol):
    """The ``register`` callback of :func:`fewshot_bench_register_datasets`."""

    def __call__(self, spec: DatasetSpec, /) -> None:
        """Register one dataset."""
        ...


class RegisterBackbone(Protocol):
    """The ``register`` callback of :func:`fewshot_bench_register_backbones`."""

    def __call__(self, name: str, factory: BackboneFactory, /) -> None:
        """Register one backbone under ``name``."""
        ...


@hookspec
def fewshot_bench_register_learners(register: RegisterLearner) -> None:
    """Register learners: call ``register(LearnerClass)`` once per learner class.

    :param register: Takes a subclass of :class:`fewshot_bench.api.Learner` whose
        ``name`` class attribute is unique among all installed plugins (lower-case letters,
        digits and ``-``). A duplicate name is rejected with an error naming both
        distributions: the project's own distributions (``fewshot-bench``,
        ``fewshot-bench-leo``, ``-metasgd``, ``-maml``) always keep their names; among
        other distributions the first registration wins. A learner's ``predict`` receives
        a :class:`fewshot_bench.api.PredictionBatch` (no query labels, queries unordered) and
        its ``meta_loss`` a labelled :class:`fewshot_bench.api.EpisodeBatch`; ``meta_loss``
        calls ``predict`` with ``batch.inputs()``, never the labelled batch.
    """


@hookspec
def fewshot_bench_register_datasets(register: RegisterDataset) -> None:
    """Register feature datasets: call ``register(spec)`` with a ``DatasetSpec``.

    :param register: Takes a :class:`fewshot_bench.api.DatasetSpec`: a unique name, its
        aliases, a one-line description, its task ``kind`` and a ``load(request)`` callable
        returning a :class:`fewshot_bench.api.FeatureDataset` whose splits are
        :class:`fewshot_bench.api.FeatureSplit` s (classification) or
        :class:`fewshot_bench.api.EpisodeSource` s (regression); optionally ``identify(request)``, a
        mapping of each split (those in ``request.splits``; all when None) to a digest of its
        content, read without loading the data (a file's digest kept beside it). The data's
        identity is part of every run key; without ``identify`` the harness loads the
        dataset and hashes its splits' features, class sizes and names. ``crops`` names
        the feature crops it offers (default ``("center",)``): a run's ``--crop`` must be
        one of them.
    """


@hookspec
def fewshot_bench_register_backbones(register: RegisterBackbone) -> None:
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
        in eval mode. See :class:`fewshot_bench.api.Backbone`.
    """
