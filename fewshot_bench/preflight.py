"""Checks made before any work: a run fails in a second, with one line, or not at all.

:func:`prepare` checks everything that the command line, the learner's config and the
places a run writes to can tell (the episode shape and seed, every ``--set`` value, the
results store, the checkpoint folder) before any data is loaded; :func:`check_episodes`
checks, as soon as the dataset is loaded and before meta-training, that every split can
give the episodes asked for (classes per episode, examples per class).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from fewshot_bench.config import config_to_dict
from fewshot_bench.errors import ConfigError, WriteError
from fewshot_bench.store import ResultStore, RunRecord
from fewshot_bench.tasks import task_kind

MAX_SEED = 2**32 - 1  # seeds are hashed as unsigned 64-bit words with room for the step


def check_spec(spec: Any, kind: str) -> None:
    """The run's own values, against what they mean (one line naming the option)."""
    fixed = task_kind(kind).fixed_way
    if fixed is None and spec.way < 2:
        raise ConfigError(
            f"--way {spec.way}: a classification episode needs at least 2 classes "
            "(1-way episodes are always right, 100% says nothing)"
        )
    if spec.shot < 1:
        raise ConfigError(f"--shot {spec.shot}: each class needs at least 1 support example")
    if not 0 <= spec.seed <= MAX_SEED:
        raise ConfigError(f"--seed {spec.seed}: seeds run from 0 to {MAX_SEED:,}")
    for name, minimum in (("steps", 0), ("episodes", 1), ("val_every", 1), ("val_episodes", 1)):
        if getattr(spec, name) < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {minimum}")
    if spec.patience is not None and spec.patience < 0:
        raise ConfigError(f"--patience {spec.patience}: give a number of validations (0: never stop early)")
    if spec.eval_query is not None and spec.eval_query < 1:
        raise ConfigError(f"--eval-query {spec.eval_query}: each class needs at least 1 query")


def check_checkpoint_dir(directory: Path | None, run_key: str) -> None:
    """The checkpoint folder exists (or can be made) and can be written; the run's checkpoint is not a folder."""
    if directory is None:
        return
    hint = "pass --checkpoint-dir DIR in a writable place"
    if directory.exists() and not directory.is_dir():
        raise WriteError(f"checkpoint folder {directory} is a file, not a folder; {hint}")
    probe = directory / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if directory.is_dir():
            probe.unlink(missing_ok=True)
        raise WriteError(f"cannot write checkpoints in {directory}: {exc.strerror or exc}; {hint}") from None
    for name in (f"{run_key}.pt", f"{run_key}.model.pt"):
        if (directory / name).is_dir():
            raise WriteError(f"checkpoint {directory / name} is a directory, not a file; remove it or {hint}")


def prepare(spec: Any, ctx: Any) -> str:
    """Check ``spec`` against its learner, config, store and checkpoint folder; returns its run key.

    Loads no data and trains nothing: what fails here fails before the run header.
    """
    from fewshot_bench.runner import resolve_config  # runner imports this module

    host = ctx.host
    cls = host.learner(spec.learner)
    kind = host.dataset(spec.dataset).kind
    check_spec(spec, kind)
    if kind not in cls.kinds:
        raise ConfigError(
            f"learner {spec.learner!r} solves {' and '.join(cls.kinds)} tasks, but dataset {spec.dataset!r} "
            f"poses {kind}; pick another learner (see `fewshot-bench learners`)"
        )
    run_key = spec.key(config_to_dict(resolve_config(cls, spec, kind)))
    with ResultStore(ctx.store_path):  # created, migrated and proved writable now, not after training
        pass
    check_checkpoint_dir(ctx.checkpoint_dir, run_key)
    return run_key


def stored_run(store_path: Path, run_key: str) -> RunRecord | None:
    """The complete run with this key in the store, if any (one run key, one complete row)."""
    with ResultStore(store_path) as store:
        return store.find_complete(run_key)


def check_episodes(dataset: Any, spec: Any, eval_query: int, scored: str = "test") -> None:
    """Every split can give the episodes asked for: raises the split's own one-line DataError if not.

    Meta-training checks its train and validation splits when it starts; this checks the
    split that is scored at the end too, before any training.
    """
    dataset.split(scored).sampler(spec.way, spec.shot, eval_query, spec.seed, stream=scored)
