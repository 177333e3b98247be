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

    :param register: Takes a subclass of :class:`fewshot_bench.learner.Learner` whose
        ``name`` class attribute is unique among all installed plugins (lower-case letters,
        digits and ``-``). A duplicate name is rejected with an error naming both
        distributions; the first registration wins.
    """


@hookspec
def fewshot_bench_register_datasets(register: Callable[..., None]) -> None:
    """Register feature datasets: call ``register(spec)`` with a ``DatasetSpec``.

    :param register: Takes a :class:`fewshot_bench.data.DatasetSpec`: a unique name, its
        aliases, a one-line description and a ``load(request)`` callable returning a
        :class:`fewshot_bench.data.FeatureDataset`.
    """


@hookspec
def fewshot_bench_register_backbones(register: Callable[..., None]) -> None:
    """Register feature backbones (stage 1 of the paper): call ``register(name, factory)``.

    :param register: Takes a unique backbone name and a factory returning a
        ``torch.nn.Module`` that maps an image batch ``[B, C, H, W]`` to features ``[B, D]``.
    """
