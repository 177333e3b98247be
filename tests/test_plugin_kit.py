"""The plugin authors' kit: every installed learner passes the conformance checks, each check
catches the bug it exists for, ``check-plugin`` and ``new-plugin`` work, and a generated
plugin installed with pip passes ``check-plugin`` while a leaky one is caught."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from helpers import one_line_error
from torch import nn

from fewshot_bench import Learner, LearnerConfig, LossOutput
from fewshot_bench.api import CLASSIFICATION
from fewshot_bench.commands.new_plugin import names_for, write_plugin
from fewshot_bench.errors import ConfigError
from fewshot_bench.learners.baselines import NearestCentroid
from fewshot_bench.plugin_host import load_plugins
from fewshot_bench.testing import CHECKS, CheckOptions, parametrize_with_checks, run_check, run_checks

# pytester tests the check_learner fixture; plugin_tree provides the pip-installed test plugins.
pytest_plugins = ["pytester", "plugin_tree"]

INSTALLED = load_plugins()


@parametrize_with_checks([reg.obj for _, reg in sorted(INSTALLED.learners.items())])
def test_installed_learner_conforms(learner, check):
    """Every installed learner (built-ins, metasgd, maml, leo and its ablations) passes every check."""
    check(learner, CheckOptions(host=INSTALLED))


# --- each check catches its bug --------------------------------------------------------------


def outcome(cls: type[Learner], name: str, **options) -> tuple[str, str]:
    """(status, detail) of one check on ``cls``."""
    result = run_check(CHECKS[name], cls, CheckOptions(host=INSTALLED, **options))
    return result.status, result.detail


class BatchCentred(NearestCentroid):
    """Centres features on the mean over all episodes of the batch: a leak between episodes."""

    name = "batch-centred"
    description = "leaks through a batch-wide mean"

    def predict(self, batch):
        centre = batch.support.mean(dim=(0, 1, 2))
        centroids = batch.support.mean(dim=2) - centre
        return torch.einsum("bqd,bnd->bqn", batch.query - centre, centroids)


class PositionAware(NearestCentroid):
    """Adds each episode's position in the batch to its logits."""

    name = "position-aware"
    description = "depends on the position of an episode in the batch"

    def predict(self, batch):
        logits = super().predict(batch)
        bias = (torch.arange(batch.batch_size, dtype=logits.dtype).view(-1, 1, 1)
                * torch.arange(batch.n_way, dtype=logits.dtype))
        return logits + bias


class BatchSizeAware(NearestCentroid):
    """Scales its logits by the batch size: the same episode scores differently alone and in a batch."""

    name = "batch-size-aware"
    description = "depends on the batch size"

    def predict(self, batch):
        return super().predict(batch) * batch.batch_size + torch.arange(batch.n_way, dtype=batch.support.dtype)


class WrongShape(NearestCentroid):
    """Returns its logits class-major: [B, N, M] instead of [B, M, N]."""

    name = "wrong-shape"
    description = "transposes the logits"

    def predict(self, batch):
        logits = super().predict(batch)
        return logits.transpose(1, 2)


class NotFinite(NearestCentroid):
    """Divides by a zero norm on purpose."""

    name = "not-finite"
    description = "returns NaN logits"

    def predict(self, batch):
        return super().predict(batch) / 0.0 * 0.0


class Unseeded(NearestCentroid):
    """Draws its random projection from a fresh, unseeded generator."""

    name = "unseeded"
    description = "ignores torch.manual_seed"

    def __init__(self, config, task):
        super().__init__(config, task)
        g = torch.Generator()
        g.seed()  # the bug: a seed from the operating system, not from torch.manual_seed
        self.register_buffer("projection", torch.randn(task.feature_dim, 32, generator=g))

    def predict(self, batch):
        centroids = batch.support.mean(dim=2) @ self.projection
        return torch.einsum("bqd,bnd->bqn", batch.query @ self.projection, centroids)


class SamplesInEval(NearestCentroid):
    """Adds noise to its logits even in evaluation mode."""

    name = "samples-in-eval"
    description = "samples at evaluation"

    def predict(self, batch):
        logits = super().predict(batch)
        return logits + torch.randn_like(logits)


class HiddenState(NearestCentroid):
    """Keeps a learned offset in a plain tensor attribute, which state_dict does not save."""

    name = "hidden-state"
    description = "state outside parameters and buffers"

    def __init__(self, config, task):
        super().__init__(config, task)
        self.scale = nn.Parameter(torch.ones(()))
        self.offset = torch.randn(task.n_way)  # the bug: neither a parameter nor a buffer

    def predict(self, batch):
        return self.scale * super().predict(batch) + self.offset


class NoDataclassConfig(NearestCentroid):
    """A Config that is a plain class."""

    name = "plain-config"
    description = "Config is not a dataclass"

    class Config:
        """Not a dataclass."""


@dataclass
class DeadConfig(LearnerConfig):
    """Config of a learner whose meta-loss ignores its parameters."""

    outer_lr: float = 0.1


class Dead(NearestCentroid):
    """Meta-trainable in name only: its loss never touches its parameter."""

    name = "dead"
    description = "meta_loss does not depend on the parameters"
    meta_trainable = True
    Config = DeadConfig

    def __init__(self, config, task):
        super().__init__(config, task)
        self.weight = nn.Parameter(torch.zeros(()))

    def meta_loss(self, batch):
        return LossOutput(0.0 * self.weight + 1.0)


class Constant(NearestCentroid):
    """Meta-trainable, but predicts the same logits for every query: it cannot beat chance."""

    name = "constant"
    description = "predicts learned constant logits"
    meta_trainable = True

    def __init__(self, config, task):
        super().__init__(config, task)
        self.bias = nn.Parameter(torch.zeros(task.n_way))

    def predict(self, batch):
        return self.bias.expand(batch.batch_size, batch.n_queries, batch.n_way)

    def meta_loss(self, batch):
        logits = self.predict(batch.inputs())  # predict sees what it sees at evaluation: no query labels
        return LossOutput(CLASSIFICATION.loss(logits, batch.query_labels))


class LabelledPredict(Constant):
    """Hands predict the labelled EpisodeBatch from meta_loss: predict would see what it never sees at evaluation."""

    name = "labelled-predict"

    def meta_loss(self, batch):
        return LossOutput(CLASSIFICATION.loss(self.predict(batch), batch.query_labels))


@pytest.mark.parametrize(
    "cls, check, words",
    [
        (BatchCentred, "isolation", "leaks between the episodes"),
        (BatchCentred, "batching", "batched and one-at-a-time predictions differ"),
        (PositionAware, "permutation", "position in the batch"),
        (BatchSizeAware, "batching", "batched and one-at-a-time predictions differ"),
        (WrongShape, "predict", "expected [4, 15, 5]"),
        (NotFinite, "predict", "NaN or infinite"),
        (Unseeded, "deterministic", "torch's global generator"),
        (SamplesInEval, "deterministic", "eval mode must not sample"),
        (HiddenState, "state-dict", "registered buffers"),
        (NoDataclassConfig, "config", "must be a @dataclass"),
        (Dead, "meta-loss", "no gradient"),
        (LabelledPredict, "meta-loss", "call self.predict(batch.inputs())"),
        (Dead, "meta-training", "did not change any parameter"),
        (Constant, "meta-training", "not better than a trivial predictor"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_check_catches_its_bug(cls, check, words):
    """A learner with one specific bug fails exactly the check written for it, with a message saying why."""
    status, detail = outcome(cls, check)
    assert status == "failed", detail
    assert words in detail


def test_leaky_learner_passes_the_checks_that_cannot_see_its_leak():
    """A batch-wide mean is permutation invariant: only isolation and batching expose it."""
    assert outcome(BatchCentred, "permutation")[0] == "passed"
    assert outcome(BatchCentred, "predict")[0] == "passed"


def test_name_check_rejects_malformed_and_taken_names():
    """A malformed name, and an installed learner's name on another class, both fail; the owner passes."""
    malformed = type("Bad", (NearestCentroid,), {"name": "Bad_Name", "description": "x"})
    impostor = type("Impostor", (NearestCentroid,), {"name": "logreg", "description": "x"})
    assert outcome(malformed, "name")[0] == "failed"
    status, detail = outcome(impostor, "name")
    assert status == "failed" and "already taken" in detail and "'fewshot-bench'" in detail
    assert outcome(NearestCentroid, "name")[0] == "passed"


def test_cpu_budget_fails_when_over_and_reports_the_time():
    """The budget check passes a fast learner and fails it under an impossible budget."""
    status, detail = outcome(NearestCentroid, "cpu-budget")
    assert status == "passed" and "100 test episodes (all remaining queries) in" in detail
    status, detail = outcome(NearestCentroid, "cpu-budget", cpu_budget_s=1e-9)
    assert status == "failed" and detail.startswith("over budget")


def test_non_meta_trainable_learners_skip_the_training_checks():
    """Nothing to meta-train: meta-loss, meta-training and population are skipped, the rest pass."""
    results = {r.check: r.status for r in run_checks(NearestCentroid, CheckOptions(host=INSTALLED))}
    assert results.pop("meta-loss") == results.pop("meta-training") == results.pop("population") == "skipped"
    assert set(results.values()) == {"passed"}


def test_check_learner_fixture_fails_listing_each_failure(pytester):
    """The pytest plugin's ``check_learner`` fixture fails a test naming every failing check."""
    pytester.makepyfile(
        """
        import torch
        from fewshot_bench.learners.baselines import NearestCentroid

        class Leaky(NearestCentroid):
            name = "leaky-one"
            description = "leaks"

            def predict(self, batch):
                centre = batch.support.mean(dim=(0, 1, 2))
                c = batch.support.mean(dim=2) - centre
                return torch.einsum("bqd,bnd->bqn", batch.query - centre, c)

        def test_leaky(check_learner):
            check_learner(Leaky, only=["isolation", "permutation", "batching"])

        def test_fine(check_learner, check_options):
            assert check_options.cpu_budget_s == 7.5
            check_learner(NearestCentroid, only=["isolation", "cpu-budget"])
        """
    )
    result = pytester.runpytest_inprocess("-p", "fewshot_bench.testing", "--fewshot-check-budget", "7.5", "-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*learner 'leaky-one' failed 2 of 3 checks:*", "*isolation:*", "*batching:*"])


# --- check-plugin --------------------------------------------------------------------------


def test_check_plugin_passes_a_builtin_learner(cli):
    """``check-plugin`` prints one row per check and exits 0 when all pass."""
    r = cli("check-plugin", "logreg", "--only", "predict", "--only", "isolation", "--json")
    assert r.code == 0, r.err
    report = r.json()
    assert report["passed"] is True
    (learner,) = report["learners"]
    assert learner["distribution"] == "fewshot-bench"
    assert [c["check"] for c in learner["checks"]] == ["predict", "isolation"]
    assert {c["status"] for c in learner["checks"]} == {"passed"}


def test_check_plugin_rejects_unknown_learner_and_bad_options(cli):
    """Unknown learners and nonsense sizes are one-line errors."""
    r = cli("check-plugin", "no-such-learner")
    one_line_error(r, "unknown learner 'no-such-learner'")
    one_line_error(cli("check-plugin", "logreg", "--budget", "0"), "--budget must be a positive")
    r = cli("check-plugin", "logreg", "--only", "no-such-check")
    assert r.code == 2 and "invalid choice" in r.err


# --- new-plugin ----------------------------------------------------------------------------


def test_new_plugin_writes_a_complete_package(cli, tmp_path):
    """The package has the entry point, a learner, tests and a README, with every placeholder filled."""
    r = cli("new-plugin", "my-learner", "--dir", tmp_path / "pkg")
    assert r.code == 0, r.err
    files = sorted(p.relative_to(tmp_path / "pkg").as_posix() for p in (tmp_path / "pkg").rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "benchmarks/test_speed.py",
        "conftest.py",
        "fewshot_bench_my_learner/__init__.py",
        "fewshot_bench_my_learner/learner.py",
        "pyproject.toml",
        "tests/test_conformance.py",
        "tests/test_learner.py",
    ]
    pyproject = (tmp_path / "pkg" / "pyproject.toml").read_text()
    assert '[project.entry-points.fewshot_bench]\nmy-learner = "fewshot_bench_my_learner"' in pyproject
    for f in files:
        assert "{{" not in (tmp_path / "pkg" / f).read_text(), f
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg.")]  # no staging directory left


def test_new_plugin_learner_conforms_before_it_is_installed(tmp_path, monkeypatch):
    """The template's learner, imported from the generated package, passes the quick checks."""
    write_plugin(tmp_path / "pkg", names_for("fresh-learner"))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    from fewshot_bench_fresh_learner import FreshLearner

    options = CheckOptions(host=INSTALLED)
    results = run_checks(FreshLearner, options,
                         only=["name", "config", "predict", "meta-loss", "isolation", "state-dict"])
    assert [r.status for r in results] == ["passed"] * 6, [(r.check, r.detail) for r in results]


def test_new_plugin_refuses_to_overwrite_and_bad_names(cli, tmp_path):
    """An existing non-empty directory, a malformed name and a taken name are refused; nothing is written."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    r = cli("new-plugin", "my-learner", "--dir", tmp_path / "taken")
    assert r.code == 1 and "already exists" in r.err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    r = cli("new-plugin", "My_Learner", "--dir", tmp_path / "x")
    assert r.code == 1 and "lower-case" in r.err and not (tmp_path / "x").exists()
    r = cli("new-plugin", "metasgd", "--dir", tmp_path / "y")
    assert r.code == 1 and "already taken by distribution 'fewshot-bench-metasgd'" in r.err
    assert not (tmp_path / "y").exists()
    (tmp_path / "empty").mkdir()
    assert cli("new-plugin", "my-learner", "--dir", tmp_path / "empty").code == 0
    with pytest.raises(ConfigError):
        names_for("ok-name", description='has "quotes"')


@pytest.mark.parametrize("kind, module_files", [
    ("dataset", ["fewshot_bench_my_thing/__init__.py", "tests/test_dataset.py"]),
    ("backbone", ["fewshot_bench_my_thing/__init__.py", "tests/test_backbone.py"]),
])
def test_new_plugin_writes_a_dataset_or_backbone_package(cli, tmp_path, kind, module_files):
    """``--kind dataset|backbone``: the entry point, the module registering NAME through its kind's hook, tests."""
    r = cli("new-plugin", "my-thing", "--kind", kind, "--dir", tmp_path / "pkg")
    assert r.code == 0, r.err
    files = sorted(p.relative_to(tmp_path / "pkg").as_posix() for p in (tmp_path / "pkg").rglob("*") if p.is_file())
    assert files == sorted(["README.md", "pyproject.toml", *module_files])
    pyproject = (tmp_path / "pkg" / "pyproject.toml").read_text()
    assert '[project.entry-points.fewshot_bench]\nmy-thing = "fewshot_bench_my_thing"' in pyproject
    module = (tmp_path / "pkg" / "fewshot_bench_my_thing" / "__init__.py").read_text()
    assert f"def fewshot_bench_register_{kind}s(" in module and "my-thing" in module
    for f in files:
        assert "{{" not in (tmp_path / "pkg" / f).read_text(), f


def test_new_plugin_refuses_a_dataset_or_backbone_name_that_is_taken(cli, tmp_path):
    """A dataset name (or alias) and a backbone name are checked against their own kind's registry."""
    r = cli("new-plugin", "synthetic", "--kind", "dataset", "--dir", tmp_path / "a")
    assert r.code == 1 and "dataset name 'synthetic' is already taken by distribution 'fewshot-bench'" in r.err
    r = cli("new-plugin", "conv4", "--kind", "backbone", "--dir", tmp_path / "b")
    assert r.code == 1 and "backbone name 'conv4' is already taken" in r.err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert cli("new-plugin", "conv4", "--kind", "dataset", "--dir", tmp_path / "c").code == 0  # other kinds' names


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dataset", "backbone"])
def test_generated_dataset_and_backbone_tests_pass_as_generated(tmp_path, kind):
    """The generated package's own tests pass under pytest before it is installed (in a fresh process)."""
    import os
    import subprocess
    import sys

    target = tmp_path / f"fewshot-bench-my-{kind}"
    write_plugin(target, names_for(f"my-{kind}", kind=kind))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEWSHOT_BENCH_")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"dataset": "3 passed", "backbone": "2 passed"}[kind] in done.stdout


# --- a plugin written outside the repository, installed with pip ---------------------------


def test_installed_template_plugin_is_listed_and_runs(plugins_on_path, cli):
    """The pip-installed template appears in ``plugins --json`` and ``learners`` and runs end to end."""
    report = cli("plugins", "--json").json()
    mine = [p for p in report["plugins"] if p["distribution"] == "fewshot-bench-toy-proto"]
    name = plugins_on_path.template_learner
    assert mine and mine[0]["learners"] == [name]
    learners = {row["learner"]: row for row in cli("learners", "--json").json()}
    assert learners[name]["distribution"] == "fewshot-bench-toy-proto"
    r = cli("run", "--learner", name, "--steps", "20", "--val-every", "20", "--val-episodes", "20",
            "--episodes", "50", "--eval-query", "15", "--json")
    assert r.code == 0, r.err
    assert r.json()["accuracy"] > 0.3  # 5-way: chance is 0.2


@pytest.mark.slow
def test_check_plugin_passes_the_installed_template(plugin_tree):
    """``check-plugin`` on the pip-installed template, in its own process: every check passes, its readout's
    included."""
    done = plugin_tree.cli("check-plugin", plugin_tree.template_learner, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    (learner,) = report["learners"]
    assert learner["distribution"] == "fewshot-bench-toy-proto"
    assert {c["check"]: c["status"] for c in learner["checks"]} == dict.fromkeys(CHECKS, "passed")
    budget = next(c for c in learner["checks"] if c["check"] == "cpu-budget")
    assert "linear_readout" not in budget["detail"]  # evaluated through its readout: no hint to add one


@pytest.mark.slow
def test_check_plugin_catches_the_installed_leaky_learner(plugin_tree):
    """``check-plugin`` exits 1 naming the learner, its distribution and the checks that caught the leak."""
    done = plugin_tree.cli("check-plugin", "leaky-centroid")
    assert done.returncode == 1
    assert "isolation" in done.stdout and "FAILED" in done.stdout
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("fewshot-bench: error: conformance checks failed:")
    assert "'leaky-centroid' (distribution 'fewshot-bench-leaky') failed isolation, batching" in error


@pytest.mark.slow
def test_generated_tests_run_under_pytest(plugin_tree):
    """The template's own tests (conformance via parametrize_with_checks, plus a unit test) pass under pytest."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--fewshot-check-steps", "10",
         str(plugin_tree.template)],
        cwd=plugin_tree.root, env=plugin_tree.env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(CHECKS) + 1} passed" in done.stdout  # every check (the readout's included) and the unit test
