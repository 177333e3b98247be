"""Sub-commands of ``fewshot-bench``: each module adds its parsers in ``register(subparsers)``.

:data:`COMMANDS` names every sub-command, its module and its one-line help, so that
``fewshot-bench --help`` lists them without importing any (several import torch); the CLI
imports only the chosen command's module. ``tests/test_cli_start.py`` checks that this table
matches what the modules register.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """A sub-command: its name, the module (under ``fewshot_bench.commands``) that registers it, its help."""

    name: str
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("backbones", "backbones", "list feature backbones (for pretrain / embed)"),
    Command("bench", "bench", "time learners' meta-training step, inner loop and evaluation beside the built-ins"),
    Command("check-plugin", "check_plugin", "run the conformance checks on installed learners"),
    Command("compare", "compare", "paired difference of two learners on the same test episodes"),
    Command("data", "data", "check, download or import embedding files"),
    Command("embed", "embed", "export features of images with a pretrained backbone"),
    Command("export", "export", "log stored runs to TensorBoard or MLflow"),
    Command("figure", "figure", "draw the LEO paper's figure 3, 4 or 5, or learning curves, from stored runs"),
    Command("learners", "listing", "list installed learners"),
    Command("datasets", "listing", "list available datasets"),
    Command("plugins", "listing", "list installed plugins, their versions and load errors"),
    Command("new-plugin", "new_plugin", "write a new learner, dataset or backbone plugin package from a template"),
    Command("pretrain", "pretrain", "pretrain a feature backbone on the meta-train classes"),
    Command("rekey", "rekey", "give runs stored before data ids the id of their (unchanged) data"),
    Command("report", "report", "write one self-contained HTML page of the store's tables, comparisons and curves"),
    Command("results", "results", "list stored runs (or write them to a CSV, Parquet or JSON file)"),
    Command("run", "run", "meta-train and evaluate one learner"),
    Command("sweep", "sweep", "run a table's grid of runs (resumable; local pool or Ray)"),
    Command("table", "table", "render Table 1 or 2 from the store beside the paper's numbers"),
    Command("tune", "tune", "search a learner's hyperparameters on the validation split (resumable)"),
)
