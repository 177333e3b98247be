"""Checks made before any work: a run fails in a second, with one line, or not at all.

:func:`fewshot_bench.protocol.runner.prepare` checks with these everything that the command line, the
learner's config and the places a run writes to can tell (the episode shape and seed, every
``--set`` value, the results store, the checkpoint folder) before any data is loaded; :func:`check_episodes`
checks, as soon as the dataset is loaded and before meta-training, that every split can
give the episodes asked for (classes per episode, examples per class).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Any

from fewshot_bench.api.tasks import task_kind
from fewshot_bench.errors import ConfigError, ConfigValueError, DataError, WriteError
from fewshot_bench.protocol.spec import MAX_SEED, RunSpec
from fewshot_bench.records.store import ResultStore, RunRecord


def check_seed(seed: int) -> None:
    """A one-line error unless ``seed`` is one the episode hashes and numpy's generators take."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed {seed}: seeds run from 0 to {MAX_SEED:,}")


def check_crop(spec: RunSpec, crops: tuple[str, ...]) -> None:
    """The run's crop is one its dataset offers (one line naming them if not)."""
    if spec.crop not in crops:
        raise ConfigValueError(f"--crop {spec.crop!r}: dataset {spec.dataset!r} offers {', '.join(crops)}")


def check_spec(spec: RunSpec, kind: str) -> None:
    """The run's own values, against what they mean (one line naming the option)."""
    fixed = task_kind(kind).fixed_way
    if fixed is None and spec.way < 2:
        raise ConfigError(
            f"--way {spec.way}: a classification episode needs at least 2 classes "
            "(1-way episodes are always right, 100% says nothing)"
        )
    if spec.shot < 1:
        raise ConfigError(f"--shot {spec.shot}: each class needs at least 1 support example")
    check_seed(spec.seed)
    for name, minimum in (("steps", 0), ("episodes", 1), ("val_every", 1), ("val_episodes", 1)):
        if getattr(spec, name) < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {minimum}")
    if spec.patience is not None and spec.patience < 0:
        raise ConfigError(f"--patience {spec.patience}: give a number of validations (0: never stop early)")
    if spec.eval_query is not None and spec.eval_query < 1:
        raise ConfigError(f"--eval-query {spec.eval_query}: each class needs at least 1 query")


PROBE_BYTES = 64 * 1024  # what a new store's first pages take, about


def check_writable(folder: Path, what: str, hint: str) -> None:
    """``folder``, or its nearest existing parent when it does not exist yet, can be written; nothing is left behind."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(f"{what} {existing} is a file, not a folder; {hint}")
    probe = existing / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        # Real bytes, flushed: an empty file can still be made on a full disk, and a run would then fail at the end.
        with open(probe, "wb") as f:
            f.write(bytes(PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        why = "the disk is full; free some space" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise WriteError(f"cannot write the {what} in {existing}: {why}; {hint}") from None
    finally:  # an interrupt (Ctrl-C) too; on a read-only file system even the attempt fails (EROFS)
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def check_checkpoint_dir(directory: Path | None, *run_keys: str) -> None:
    """The checkpoint folder can be made and written (it is not made yet); no run's checkpoint is a folder."""
    if directory is None:
        return
    check_writable(directory, "checkpoint folder", "pass --checkpoint-dir DIR in a writable place")
    for name in (f"{key}{suffix}" for key in run_keys for suffix in (".pt", ".model.pt")):
        if (directory / name).is_dir():
            raise WriteError(
                f"checkpoint {directory / name} is a directory, not a file; remove it or pass --checkpoint-dir DIR"
            )


def check_store(path: Path) -> None:
    """An existing store opens, is migrated and can be written; a new one could be created (it is not, yet).

    A run that fails later (bad data) then leaves no empty store behind.
    """
    if path.exists():
        with ResultStore(path):
            return
    check_writable(path.resolve().parent, "results store folder", "pass --store PATH in a writable place")


def stored_run(store_path: Path, run_key: str) -> RunRecord | None:
    """The complete run with this key in the store, if any (one run key, one complete row)."""
    if not Path(store_path).exists():
        return None
    with ResultStore(store_path) as store:
        found = store.find_complete(run_key)
        if found is not None:
            store.episode_values(found.run_id)  # a corrupt row fails here, before the run is announced as reused
        return found


def check_episodes(dataset: Any, spec: RunSpec, eval_query: int, scored: str = "test") -> None:
    """Every split can give the episodes asked for: raises the split's own one-line DataError if not.

    Meta-training checks its train and validation splits when it starts; this checks the
    split that is scored at the end too, before any training.
    """
    split = dataset.split(scored)
    if spec.eval_query is None and eval_query < 1:  # all remaining rows were asked for, and none remain
        rows = eval_query + spec.shot  # the remaining rows are the smallest class's less the shot
        raise DataError(
            f"--shot {spec.shot}: split {scored!r} of {dataset.name!r} has as few as {rows} examples per class, "
            f"leaving no query after {spec.shot} support examples; give --shot below {rows}"
        )
    split.sampler(spec.way, spec.shot, eval_query, spec.seed, stream=scored)
