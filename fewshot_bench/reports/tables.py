"""The LEO paper's Table 1 and Table 2 as data: which learners fill which cells, and the
numbers the paper printed beside them.

A table is a list of rows over a grid of settings (dataset x shot, 5-way). A row either
names a learner the harness runs ("ours") or only carries numbers published elsewhere
("reported": copied from the paper's text, never run here). Paper numbers are percent
accuracies, mean ± std over 5 seeds, on LEO's "center" WRN-28-10 features unless noted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fewshot_bench.errors import ConfigError

# The paper's two datasets, by the names (or aliases) their loaders register.
PAPER_DATASETS = ("mini", "tiered")
PAPER_DATASET_LABELS = {"mini": "miniImageNet", "tiered": "tieredImageNet"}
SHOTS = (1, 5)
WAY = 5


@dataclass(frozen=True)
class PaperCell:
    """A published accuracy in percent: mean ± std over seeds (or the paper's ± for reported rows)."""

    mean: float
    std: float


Numbers = dict[tuple[str, int], PaperCell]


def numbers(mini1=None, mini5=None, tiered1=None, tiered5=None) -> Numbers:
    """Paper numbers from (mean, std) pairs in the paper's column order; None where it has none."""
    cols = {("mini", 1): mini1, ("mini", 5): mini5, ("tiered", 1): tiered1, ("tiered", 5): tiered5}
    return {k: PaperCell(*v) for k, v in cols.items() if v is not None}


@dataclass(frozen=True)
class Row:
    """One row of a table: a learner we run (``learner`` set) or a reported-only row."""

    label: str
    learner: str | None = None
    paper: Numbers = field(default_factory=dict)
    source: str = "LEO paper"
    # Paper numbers on the "multiview" miniImageNet features (10 crops averaged), where given.
    paper_multiview: Numbers = field(default_factory=dict)

    @property
    def reported(self) -> bool:
        """True for rows whose numbers come from publications and are not run by the harness."""
        return self.learner is None


@dataclass(frozen=True)
class TableSpec:
    """A table: its rows and the datasets and shots of its columns."""

    number: int
    subject: str  # what the table shows, e.g. "test accuracy"
    rows: tuple[Row, ...]
    datasets: tuple[str, ...] = PAPER_DATASETS
    shots: tuple[int, ...] = SHOTS
    way: int = WAY

    @property
    def title(self) -> str:
        """The title on the paper's datasets: ``Table 1: test accuracy on miniImageNet and tieredImageNet (5-way)``."""
        return self.title_on([PAPER_DATASET_LABELS[d] for d in self.datasets])

    def title_on(self, datasets: list[str]) -> str:
        """The title naming the datasets the table is rendered on (the paper's, or those replacing them)."""
        return f"Table {self.number}: {self.subject} on {' and '.join(datasets)} ({self.way}-way)"

    @property
    def learners(self) -> list[str]:
        """The learners this table runs, in row order."""
        return [r.learner for r in self.rows if r.learner is not None]

    def row(self, learner: str) -> Row:
        """The row of ``learner``."""
        for r in self.rows:
            if r.learner == learner:
                return r
        raise KeyError(learner)


# --- paper numbers (LEO, ICLR 2019, Tables 1 and 2) --------------------------------------

LEO = numbers((61.76, 0.08), (77.59, 0.12), (66.33, 0.05), (81.44, 0.09))
LEO_MULTIVIEW = numbers(mini1=(63.97, 0.20), mini5=(79.49, 0.70))  # paper section 4.3, text
METASGD = numbers((54.24, 0.03), (70.86, 0.04), (62.95, 0.03), (79.34, 0.06))

_reported = lambda label, cite, **kw: Row(label, None, numbers(**kw), source=cite)  # noqa: E731

TABLE1 = TableSpec(
    number=1,
    subject="test accuracy",
    rows=(
        # Reported: convolutional networks (paper Table 1, top of each block).
        _reported("Matching networks", "Vinyals et al., 2016", mini1=(43.56, 0.84), mini5=(55.31, 0.73)),
        _reported("Meta-learner LSTM", "Ravi & Larochelle, 2017", mini1=(43.44, 0.77), mini5=(60.60, 0.71)),
        _reported("MAML (conv net)", "Finn et al., 2017", mini1=(48.70, 1.84), mini5=(63.11, 0.92)),
        _reported("LLAMA", "Grant et al., 2018", mini1=(49.40, 1.83)),
        _reported("REPTILE", "Nichol & Schulman, 2018", mini1=(49.97, 0.32), mini5=(65.99, 0.58)),
        _reported("PLATIPUS", "Finn et al., 2018", mini1=(50.13, 1.86)),
        _reported("SNAIL", "Mishra et al., 2018", mini1=(55.71, 0.99), mini5=(68.88, 0.92)),
        _reported("Gidaris & Komodakis", "Gidaris & Komodakis, 2018", mini1=(56.20, 0.86), mini5=(73.00, 0.64)),
        _reported("Bauer et al.", "Bauer et al., 2017", mini1=(56.30, 0.40), mini5=(73.90, 0.30)),
        _reported("Munkhdalai et al.", "Munkhdalai et al., 2017", mini1=(57.10, 0.70), mini5=(70.04, 0.63)),
        _reported("DEML+Meta-SGD", "Zhou et al., 2018 (ImageNet-200 concept generator)",
                  mini1=(58.49, 0.91), mini5=(71.28, 0.69)),
        _reported("TADAM", "Oreshkin et al., 2018", mini1=(58.50, 0.30), mini5=(76.70, 0.30)),
        _reported("Qiao et al.", "Qiao et al., 2017", mini1=(59.60, 0.41), mini5=(73.74, 0.19)),
        _reported("MAML (deeper net)", "evaluated in Liu et al., 2018", tiered1=(51.67, 1.81), tiered5=(70.30, 0.08)),
        _reported("Prototypical Nets", "Ren et al., 2018", tiered1=(53.31, 0.89), tiered5=(72.69, 0.74)),
        _reported("Relation Net", "evaluated in Liu et al., 2018", tiered1=(54.48, 0.93), tiered5=(71.32, 0.78)),
        _reported("Transductive Prop. Nets", "Liu et al., 2018", tiered1=(57.41, 0.94), tiered5=(71.55, 0.74)),
        _reported(
            "LEO reference code", "the LEO reference implementation's README (not the paper)",
            mini1=(61.89, 0.16), mini5=(77.65, 0.09), tiered1=(66.25, 0.14), tiered5=(81.77, 0.09),
        ),
        # Run by the harness on the same features. The paper has no numbers for MAML or the
        # simple baselines on these features, so those rows have ours only.
        Row("Nearest centroid", "nearest-centroid"),
        Row("Logistic regression", "logreg"),
        Row("MAML (our features)", "maml"),
        Row("Meta-SGD (our features)", "metasgd", METASGD),
        Row("LEO", "leo", LEO, paper_multiview=LEO_MULTIVIEW),
    ),
)

TABLE2 = TableSpec(
    number=2,
    subject="ablation study and comparison to Meta-SGD",
    rows=(
        Row("Meta-SGD (our features)", "metasgd", METASGD),
        Row("Conditional generator only", "leo-generator-only",
            numbers((60.33, 0.11), (74.53, 0.11), (65.17, 0.15), (78.77, 0.03))),
        Row("Conditional generator + fine-tuning", "leo-generator-finetune",
            numbers((60.62, 0.31), (76.42, 0.09), (65.74, 0.28), (80.65, 0.07))),
        _reported("Previous SOTA", "best of Table 1's other methods",
                  mini1=(59.60, 0.41), mini5=(76.70, 0.30), tiered1=(57.41, 0.94), tiered5=(72.69, 0.74)),
        Row("LEO (random prior)", "leo-random-prior",
            numbers((61.01, 0.12), (77.27, 0.05), (65.39, 0.10), (80.83, 0.13))),
        Row("LEO (deterministic)", "leo-deterministic",
            numbers((61.48, 0.05), (76.53, 0.24), (66.18, 0.17), (82.06, 0.08))),
        Row("LEO (no fine-tuning)", "leo-no-finetune",
            numbers((61.62, 0.15), (77.46, 0.12), (66.14, 0.17), (80.89, 0.11))),
        Row("LEO", "leo", LEO, paper_multiview=LEO_MULTIVIEW),
    ),
)

TABLES = {1: TABLE1, 2: TABLE2}


def get_table(number: int | str) -> TableSpec:
    """Table ``number`` (1 or 2), or an error naming the tables there are."""
    try:
        return TABLES[int(number)]
    except (KeyError, ValueError):
        raise ConfigError(f"no table {number!r}; the tables are {', '.join(map(str, TABLES))} "
                          "(the LEO paper's)") from None


@dataclass(frozen=True)
class Setting:
    """One column group: a dataset (as the user named it) and a shot; ``paper`` is the paper
    dataset whose numbers apply (``mini`` / ``tiered``), or None when the paper has none."""

    dataset: str
    shot: int
    paper: str | None

    @property
    def label(self) -> str:
        """A column label such as ``mini 1-shot``."""
        return f"{self.dataset} {self.shot}-shot"

    @property
    def dataset_label(self) -> str:
        """The dataset as a title names it: ``miniImageNet`` for the paper's, else its name as given."""
        return PAPER_DATASET_LABELS[self.paper] if self.paper else self.dataset


def settings(table: TableSpec, datasets: list[str] | None = None, paper_of=None) -> list[Setting]:
    """The table's settings, with ``datasets`` replacing the paper's (one or two of them).

    ``paper_of(name)`` maps a dataset name to ``mini``/``tiered`` when it is one of the
    paper's datasets (so its numbers apply); by default only those literal names match.
    """
    paper_of = paper_of or (lambda name: name if name in PAPER_DATASETS else None)
    chosen = list(datasets) if datasets else list(table.datasets)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"--dataset names a dataset twice: {', '.join(chosen)}")
    return [Setting(d, shot, paper_of(d)) for d in chosen for shot in table.shots]


def paper_cell(row: Row, setting: Setting, crop: str = "center") -> PaperCell | None:
    """The paper's number for ``row`` in ``setting`` (on ``crop`` features), if it printed one."""
    if setting.paper is None:
        return None
    # Reported rows used their own features; our rows' numbers depend on the crop we ran.
    source = row.paper_multiview if crop == "multiview" and not row.reported else row.paper
    return source.get((setting.paper, setting.shot))
