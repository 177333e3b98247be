"""Helpers shared by sub-commands: plugin loading, the options several commands take, output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewshot_bench.console.table_fit import fit_table, terminal_width
from fewshot_bench.locations import DATA_ENV, data_root
from fewshot_bench.protocol.spec import RunSettings
from fewshot_bench.records.store import DEFAULT_STORE

if TYPE_CHECKING:  # an annotation only: plugins import torch, which `results` and `compare` need not
    from fewshot_bench.plugin_host import PluginHost


def host_from_args(args: argparse.Namespace, warn: bool = False) -> PluginHost:
    """Load plugins honouring ``--strict-plugins``.

    With ``warn``, one line on stderr says how many plugins failed to load (the details are
    in ``fewshot-bench plugins``): what ``learners``, ``run`` and ``sweep`` print.
    """
    from fewshot_bench.plugin_host import load_plugins  # torch: only commands that need plugins pay for it

    host = load_plugins(strict=True if getattr(args, "strict_plugins", False) else None)
    warning = host.failure_warning() if warn else None
    if warning:
        print(warning, file=sys.stderr)
    return host


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store PATH`` (default ``fewshot-results.db`` in the working directory)."""
    parser.add_argument("--store", type=Path, default=Path(DEFAULT_STORE),
                        help=f"results store (default: {DEFAULT_STORE})")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir DIR`` (default: ``$FEWSHOT_BENCH_DATA``)."""
    parser.add_argument("--data-dir", type=Path, default=None, help=f"root of dataset files (default: ${DATA_ENV})")


def data_dir(args: argparse.Namespace) -> Path | None:
    """The data root from ``--data-dir`` or ``$FEWSHOT_BENCH_DATA``."""
    return data_root(getattr(args, "data_dir", None))


def comma_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (argparse type)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str) -> list[int]:
    """``"1,5"`` -> ``[1, 5]`` (argparse type)."""
    try:
        return [int(t) for t in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def datasets_of(args: argparse.Namespace) -> list[str] | None:
    """The datasets of repeated ``--dataset NAME[,NAME]`` options, in order (None when not given)."""
    return [d for group in args.dataset for d in group] if args.dataset else None


def print_json(obj: Any) -> None:
    """Print one JSON object on one line (the last line of output for scripts)."""
    print(json.dumps(obj, default=str, sort_keys=False))


def print_table(rows: Iterable[dict[str, Any]], empty: str = "(none)") -> None:
    """Print rows of dicts as a plain-text table, fitted to the terminal's width (console.table_fit)."""
    rows = list(rows)
    if not rows:
        print(empty)
        return
    headers = list(dict.fromkeys(key for row in rows for key in row))
    print(fit_table([[row.get(key, "") for key in headers] for row in rows], headers, width=terminal_width()))


def print_wrapped(text: str) -> None:
    """Print a note, its words wrapped to the terminal's width (lines after the first indented); whole elsewhere."""
    width = terminal_width()
    print(textwrap.fill(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
          if width else text)


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--quiet`` or ``--json``, and only on a terminal."""
    return not getattr(args, "quiet", False) and not getattr(args, "json", False) and sys.stderr.isatty()


def progress_every(args: argparse.Namespace) -> float | None:
    """Seconds between one-line progress records on stderr when it is not a terminal (logs); None on a terminal
    or with ``--quiet``."""
    from fewshot_bench.console.progress import log_interval

    if getattr(args, "quiet", False) or sys.stderr.isatty():
        return None
    return log_interval()


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers``, ``--ray-address`` and the ``--slurm-*`` options: where a sweep's or a search's
    runs go."""
    parser.add_argument("--executor", choices=["local", "ray", "slurm"], default="local",
                        help="local process pool (default), Ray, or Slurm jobs (docs/clusters.md)")
    parser.add_argument("--workers", type=int,
                        help="local: worker processes (default: one per core); ray: CPUs of a new local instance")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local instance)")
    slurm = parser.add_argument_group(
        "Slurm (--executor slurm)", "each option's default: $FEWSHOT_BENCH_SLURM_<OPTION>, else the lab's "
        "file $FEWSHOT_BENCH_SLURM_CONFIG or ~/.config/fewshot-bench/slurm.toml (docs/clusters.md)")
    for name, metavar, text in SLURM_OPTIONS:
        slurm.add_argument("--slurm-" + name.replace("_", "-"), dest="slurm_" + name, metavar=metavar, help=text)
    slurm.add_argument("--slurm", dest="slurm_extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. --slurm mail-type=END (repeatable)")


# The Slurm options (name, metavar, help): --slurm-NAME, read back by slurm_from_args.
SLURM_OPTIONS = (
    ("partition", "NAME", "partition (default: the cluster's)"),
    ("time", "TIME", "time limit of each job: minutes, HH:MM:SS or D-HH:MM:SS (default 60); a job killed at it "
                     "is requeued and resumes from its checkpoint"),
    ("cpus", "N", "CPUs per job (--cpus-per-task; its torch threads; default 1)"),
    ("mem", "SIZE", "memory per job, e.g. 8G"),
    ("gpus", "N", "GPUs per job; a job with a GPU runs with --device cuda"),
    ("gres", "SPEC", "generic resources, e.g. gpu:a100:1"),
    ("account", "NAME", "account to charge"),
    ("qos", "NAME", "quality of service"),
    ("constraint", "FEATURES", "node features, e.g. a100"),
    ("array_parallelism", "N", "jobs running at once (an array's %%N; a search's trials in flight; default 64)"),
    ("folder", "DIR", "job folder on a filesystem the nodes share (default: slurm-jobs beside the checkpoints)"),
)


def slurm_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--slurm-*`` options given (by name, as :func:`fewshot_bench.workflows.sweep` takes them)."""
    given = {name: getattr(args, "slurm_" + name) for name, _, _ in SLURM_OPTIONS}
    given = {name: value for name, value in given.items() if value is not None}
    if args.slurm_extra:
        given["extra"] = list(args.slurm_extra)
    return given


def add_place_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--data-dir``, ``--store`` and ``--checkpoint-dir``: where ``run``, ``sweep`` and ``tune``
    compute, read and write."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    add_data_option(parser)
    add_store_option(parser)
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="where in-progress checkpoints go (default: beside the store)")


def settings_names(without: Iterable[str] = ()) -> tuple[str, ...]:
    """The :class:`~fewshot_bench.protocol.spec.RunSettings` fields that are options, in order, but ``without``."""
    return tuple(f.name for f in dataclasses.fields(RunSettings) if f.metadata.get("help") and f.name not in without)


def add_settings_options(
    parser: argparse.ArgumentParser, names: Iterable[str], defaults: Mapping[str, Any] | None = None,
    notes: Mapping[str, str] | None = None, axes: Iterable[str] = (),
) -> None:
    """The options of the :class:`~fewshot_bench.protocol.spec.RunSettings` fields ``names``, generated from the fields.

    ``defaults`` are the command's own defaults (``sweep``: the paper's budget); ``notes`` add
    a command's word to a field's help; a field in ``axes`` takes several values (repeatable,
    comma-separated: a grid axis of ``sweep``). :func:`settings_from_args` reads them back.
    """
    wanted, defaults, notes = set(names), dict(defaults or {}), dict(notes or {})
    for f in dataclasses.fields(RunSettings):
        if f.name in wanted:
            default = defaults.get(f.name, None if f.default is dataclasses.MISSING else f.default)
            help_text = f.metadata["help"] + (f"; {notes[f.name]}" if f.name in notes else "")
            flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            parser.add_argument(flag, dest=f.name, **_option(f, default, help_text, f.name in axes))


def _option(f: dataclasses.Field, default: Any, help_text: str, axis: bool) -> dict[str, Any]:
    """argparse's keywords for one settings field: a switch, a repeatable option, or one value (parsed, checked)."""
    meta = f.metadata
    if f.type == "bool":  # on by default: --no-... turns it off
        return {"default": default, "help": help_text + (" (default: on)" if default else ""),
                "action": argparse.BooleanOptionalAction if default else "store_true"}
    if axis:
        return {"action": "append", "default": None, "metavar": f"{meta['metavar']}[,{meta['metavar']}]",
                "type": comma_list, "help": help_text}
    if meta["gather"]:
        return {"action": "append", "default": [], "metavar": meta["metavar"], "type": meta["parse"], "help": help_text}
    shown = "" if default is None else f" (default: {default})"
    return {"default": default, "type": meta["parse"], "choices": meta["choices"], "metavar": meta["metavar"],
            "help": help_text + shown}


def settings_from_args(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The :class:`~fewshot_bench.protocol.spec.RunSettings` fields ``names`` as parsed (repeated options gathered)."""
    fields = {f.name: f for f in dataclasses.fields(RunSettings)}
    out = {}
    for name in names:
        gather = fields[name].metadata["gather"]
        out[name] = gather(getattr(args, name)) if gather else getattr(args, name)
    return out


def add_protocol_options(parser: argparse.ArgumentParser, episodes: bool = False, data: bool = False) -> None:
    """``--protocol ID``, ``--steps N`` (and ``--episodes N``), ``--set LEARNER.KEY=VALUE`` (and ``--data ID``):
    which stored runs to combine."""
    parser.add_argument("--protocol", metavar="ID",
                        help="use runs of this protocol (id or unique prefix, as `fewshot-bench results` shows; "
                             "default: chosen and named in the output)")
    parser.add_argument("--steps", type=int, help="only runs meta-trained for this many steps")
    if episodes:
        parser.add_argument("--episodes", type=int, help="only runs evaluated on this many test episodes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="LEARNER.KEY=VALUE",
                        help="use the learner's runs made with this --set override "
                             "(repeatable; default: runs with its defaults)")
    if data:
        parser.add_argument("--data", metavar="ID",
                            help="use runs that read this version of a dataset's data (data id or prefix, as "
                                 "`fewshot-bench results` shows; default: per dataset, the one with the most runs)")


def add_image_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``pretrain`` and ``embed``: where the images are and how they are sized."""
    p.add_argument("--images", choices=("auto", "omniglot", "folder"), default="auto",
                   help="image layout: omniglot (<Alphabet>/<character>/<png>), folder (class folders "
                        "with train/val/test.txt lists or split folders) or auto (default: detect)")
    p.add_argument("--data-dir", type=Path, required=True, help="root of the images")
    p.add_argument("--max-classes", type=int, help="use only the first N classes of each split (quick runs)")
    p.add_argument("--max-images", type=int, help="use only the first N images of each class (quick runs)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--batch-size", type=int, help="images per batch")
    p.add_argument("--threads", metavar="N|auto|free",
                   help="torch threads on CPU (default: $FEWSHOT_BENCH_THREADS, else auto: all the cores this "
                        "process may use, whatever else runs; free: the cores other processes leave free, so the "
                        "result may depend on the machine's load)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def use_image_threads(args: argparse.Namespace, device: Any, what: str) -> int | None:
    """On CPU, set torch's threads for ``pretrain``/``embed`` from ``--threads``, the environment or the cores.

    ``auto`` (the default) takes all the cores this process may use, never looking at the
    load; ``free`` the cores other processes leave free (fewshot_bench.protocol.threads).

    Returns the thread count (None on a GPU, where it does not matter).
    """
    from fewshot_bench.protocol.threads import (  # torch: lazily
        apply_threads,
        choose_big_work_threads,
        requested_threads,
    )

    if device.type != "cpu":
        return None
    choice = apply_threads(choose_big_work_threads(what, *requested_threads(args.threads)))
    logging.getLogger(__name__).info("torch threads: %d (%s)", choice.threads, choice.reason)
    return choice.threads


def add_tracking_options(parser: argparse.ArgumentParser, export: bool = False) -> None:
    """``--tracker`` (``export``: ``--to``), ``--log-dir``, ``--tracking-uri`` and ``--experiment``: where runs are
    logged for TensorBoard or MLflow (docs/tracking.md)."""
    if export:
        parser.add_argument("--to", required=True, choices=("tensorboard", "mlflow"),
                            help="log the stored runs to TensorBoard event files or to MLflow")
    else:
        parser.add_argument("--tracker", choices=("tensorboard", "mlflow"),
                            help="log to TensorBoard or MLflow: parameters, training loss, validation metric and step "
                                 "time as they happen, the final metric with its CI (the tensorboard or mlflow extra: "
                                 "pip install 'fewshot-bench[mlflow]'; docs/tracking.md)")
    parser.add_argument("--log-dir", type=Path,
                        help="TensorBoard: the folder of run folders (default: runs)"
                             + ("" if export else "; alone, it means --tracker tensorboard"))
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow: where runs go (default: $MLFLOW_TRACKING_URI, else MLflow's default local store)")
    parser.add_argument("--experiment", metavar="NAME",
                        help="MLflow: the experiment (default: $MLFLOW_EXPERIMENT_NAME, else fewshot-bench)")


def tracking_from_args(args: argparse.Namespace) -> Any:
    """The checked tracking destination of :func:`add_tracking_options`' options (None: no tracking)."""
    from fewshot_bench.tracking.destination import Tracking

    return Tracking.checked(getattr(args, "tracker", None), args.log_dir, args.tracking_uri, args.experiment)
