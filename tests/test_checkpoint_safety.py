"""Checkpoints are data, never code: every file the harness reads back is loaded with
``weights_only=True``, a bad one is a one-line error naming it (never silently skipped), and
a run checkpoint is used whole or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import one_line_error

from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.backbones.checkpoint import load_checkpoint
from fewshot_bench.config import config_to_dict
from fewshot_bench.errors import CheckpointError
from fewshot_bench.protocol.population import Population
from fewshot_bench.protocol.runner import load_model, save_model
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions, TrainResult

TINY = ("--learner", "metasgd", "--steps", "2", "--val-every", "1", "--val-episodes", "2", "--episodes", "5",
        "--eval-query", "2")


class Planted:
    """Unpickling this (with ``weights_only=False``) would create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(path: Path, marker: Path, **extra) -> Path:
    """A torch file at ``path`` whose loading with pickle's full powers would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**extra, "payload": Planted(marker)}, path)
    return path


@pytest.fixture(scope="module")
def run_key(host) -> str:
    """The run key of the TINY run: its checkpoint is ``CHECKPOINT_DIR/KEY.pt``."""
    from fewshot_bench.cli import build_parser
    from fewshot_bench.commands.run import protocol_of
    from fewshot_bench.protocol.runner import RunContext, resolve_config, run_key
    from fewshot_bench.workflows import run_spec

    spec = run_spec(host, **protocol_of(build_parser().parse_args(["run", *TINY])))
    ctx = RunContext(host=host, store_path=Path("unused.db"))
    return run_key(spec, ctx, config_to_dict(resolve_config(host.learner(spec.learner), spec)))[0]


def run_tiny(cli, checkpoint_dir: Path, *more: str):
    return cli("-q", "run", *TINY, "--checkpoint-dir", checkpoint_dir, *more)


def test_a_planted_checkpoint_never_runs_and_is_a_one_line_error(cli, tmp_path, run_key):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "ck" / f"{run_key}.pt", marker, run_key=run_key)
    line = one_line_error(run_tiny(cli, tmp_path / "ck"))
    assert not marker.exists()
    assert f"checkpoint {path} holds a Python object (io.open) that is not a tensor or plain data" in line
    assert "nothing in it was run" in line and "--restart" in line and "weights_only=False" not in line
    assert path.exists()  # evidence is left for the user

    # --restart deletes it unread and runs from the start.
    r = run_tiny(cli, tmp_path / "ck", "--restart", "--json")
    assert r.code == 0, r.err
    assert not marker.exists() and not path.exists()
    assert list((tmp_path / "ck").glob("*.model.pt")) == [tmp_path / "ck" / f"{run_key}.model.pt"]  # the key was right


class PlantedCommand:
    """Unpickling this (with ``weights_only=False``) would run a shell command creating ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_planting_a_shell_command_is_refused_as_such(host, synthetic, tmp_path):
    """torch names a global of a blocked module (os) otherwise than any other: it is not called corrupt."""
    marker, path = tmp_path / "pwned", tmp_path / "k.pt"
    torch.save({"run_key": "k", "payload": PlantedCommand(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        make_trainer(host, synthetic, path).try_resume()
    assert str(info.value).startswith(
        f"checkpoint {path} holds a Python object ({os.system.__module__}.system) that is not a tensor or plain data: "
        "refused, nothing in it was run; ")
    assert not marker.exists()


def test_a_text_file_as_checkpoint_is_an_error_naming_it(cli, tmp_path, run_key):
    path = tmp_path / "ck" / f"{run_key}.pt"
    path.parent.mkdir()
    path.write_text("hello, these are my notes\n" * 10)
    line = one_line_error(run_tiny(cli, tmp_path / "ck"))
    assert f"checkpoint {path} is corrupt or not a torch file" in line and "--restart" in line


# --- the trainer: round trip and whole-or-nothing -------------------------------------------


def make_trainer(host, synthetic, checkpoint: Path, seed: int = 0, steps: int = 2) -> MetaTrainer:
    cls = host.learner("metasgd")
    torch.manual_seed(seed)
    learner = cls(cls.default_config("synthetic", 1), TaskSpec(5, 1, synthetic.feature_dim))
    spec = RunSpec("metasgd", steps=steps, val_every=1, val_episodes=2, patience=None)
    options = TrainOptions(val_query=2, checkpoint=checkpoint, run_key="k")
    return MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"), spec, options, torch.device("cpu"))


def snapshot(trainer: MetaTrainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.learner.state_dict().items()}


@pytest.mark.parametrize(
    "content, reason",
    [
        ("truncated", "is corrupt or not a torch file (truncated, or not written by torch.save)"),
        # torch's reader says "OSError: Invalid argument" for this one: the file, not the disk, is at fault
        ("truncated-in-its-tensors", "is corrupt or not a torch file (truncated, or not written by torch.save)"),
        (b"", "is empty"),
        (os.urandom(512), "is corrupt or not a torch file"),
        ("{'run_key': 'k'}\n", "is corrupt or not a torch file"),
        ("list", "is not a fewshot-bench run checkpoint"),
    ],
    ids=["truncated", "truncated-in-its-tensors", "empty", "random-bytes", "text", "not-a-dict"],
)
def test_unreadable_checkpoints_are_errors_naming_the_file(host, synthetic, tmp_path, content, reason):
    path = tmp_path / "k.pt"
    if isinstance(content, str) and content.startswith("truncated"):
        torch.save({"run_key": "k", "weights": torch.zeros(100_000)}, path)
        whole = path.read_bytes()
        path.write_bytes(whole[:700] if content == "truncated" else whole[:len(whole) // 10])
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    trainer = make_trainer(host, synthetic, path)
    with pytest.raises(CheckpointError) as info:
        trainer.try_resume()
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} {reason}") and "--restart" in message and "\n" not in message


def test_a_checkpoint_of_another_run_is_ignored_with_a_warning(host, synthetic, tmp_path, caplog):
    path = tmp_path / "k.pt"
    torch.save({"run_key": "someone-else", "learner": {}}, path)
    assert not make_trainer(host, synthetic, path).try_resume()
    assert f"ignoring checkpoint {path}: it belongs to another run" in caplog.text


def test_restart_deletes_the_checkpoint_unread(host, synthetic, tmp_path):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "k.pt", marker, run_key="k")
    assert not make_trainer(host, synthetic, path).try_resume(restart=True)
    assert not path.exists() and not marker.exists()


def test_a_checkpoint_round_trips_under_weights_only(host, synthetic, tmp_path):
    path = tmp_path / "k.pt"
    trained = make_trainer(host, synthetic, path)
    result = trained.run()
    raw = torch.load(path, weights_only=True)  # tensors and plain data only
    assert asdict(TrainResult(**raw["result"])) == raw["result"]
    fresh = make_trainer(host, synthetic, path, seed=1)
    assert fresh.try_resume()
    assert fresh.result.steps == result.steps == 2 and fresh.result.history == result.history
    assert fresh.result.resumed_from == 2
    saved = raw["learner"]
    assert all(torch.equal(v, saved[k]) for k, v in fresh.learner.state_dict().items())
    mine, theirs = fresh.optimizer.state_dict(), trained.optimizer.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert all(torch.equal(mine["state"][i]["exp_avg"], theirs["state"][i]["exp_avg"]) for i in theirs["state"])


def test_a_checkpoint_written_before_metric_neutral_names_resumes(host, synthetic, tmp_path):
    path = tmp_path / "k.pt"
    trained = make_trainer(host, synthetic, path)
    result = trained.run()
    state = torch.load(path, weights_only=True)
    old = state["result"]
    old["best_val_accuracy"] = old.pop("best_val_metric")
    old["history"] = [{("val_accuracy" if k == "val_metric" else k): v for k, v in h.items()} for h in old["history"]]
    torch.save(state, path)
    fresh = make_trainer(host, synthetic, path, seed=1)
    assert fresh.try_resume()
    assert fresh.result.best_val_metric == result.best_val_metric and fresh.result.history == result.history


def first_weight(state: dict) -> str:
    """The name of the checkpoint's first floating-point weight."""
    return next(k for k, v in state["learner"].items() if v.is_floating_point())


def set_weight(part: str, value: float):
    """A tamper that sets ``part`` (learner or best_state)'s first weight to ``value`` everywhere."""
    return lambda s: s[part][first_weight(s)].fill_(value)


def adam(index: int, key: str, value):
    """A tamper that sets parameter ``index``'s Adam state ``key`` to ``value(old)``."""
    return lambda s: s["optimizer"]["state"][index].update({key: value(s["optimizer"]["state"][index][key])})


# (tamper, words of the one-line error): each a checkpoint the trainer would have used, or crashed on, before
# every tensor and counter was checked.
TAMPERED = {
    "no-result": (lambda s: s.pop("result"), "'result' is NoneType, not a dict"),
    "bogus-result": (lambda s: s.update(result="bogus"), "'result' is str, not a dict"),
    "bogus-steps": (lambda s: s["result"].update(steps="many"), "'result'['steps'] is 'many', not a count"),
    "extra-field": (lambda s: s["result"].update(extra=1), "'result' has keys ['extra'] missing or unexpected"),
    "extra-key": (lambda s: s.update(extra=1), "keys [] missing, ['extra'] unexpected"),
    "since-best": (lambda s: s.update(since_best=None), "'since_best' is None, not the"),
    "since-best-inconsistent": (lambda s: s.update(since_best=5), "'since_best' is 5, not the"),
    "missing-weight": (lambda s: s["learner"].popitem(), "'learner' does not fit this learner"),
    "bogus-optimizer": (lambda s: s["optimizer"].update(state={0: "bogus"}), "'optimizer' has state for parameters"),
    # killed the process with SIGSEGV in the fused Adam kernel
    "exp-avg-shape": (adam(0, "exp_avg", lambda t: torch.zeros(3)),
                      "'optimizer' state 0['exp_avg'] is a float32 (3,) tensor, not float32"),
    "exp-avg-dtype": (adam(0, "exp_avg", lambda t: t.double()), "'optimizer' state 0['exp_avg'] is a float64"),
    "exp-avg-strides": (adam(0, "exp_avg", lambda t: t.t().contiguous().t() if t.dim() == 2 else t[::1].expand(
        t.shape)), "'optimizer' state 0['exp_avg'] has strides"),
    "exp-avg-nan": (adam(1, "exp_avg", lambda t: torch.full_like(t, float("nan"))),
                    "'optimizer' state 1['exp_avg'] holds NaN or infinite values"),
    "exp-avg-sq-negative": (adam(1, "exp_avg_sq", lambda t: -1 - t),
                            "'optimizer' state 1['exp_avg_sq'] holds negative values"),
    # a KeyError traceback
    "no-best-state": (lambda s: s.pop("best_state"), "keys ['best_state'] missing"),
    # an error at the first step, blaming the learner
    "lr-not-a-number": (lambda s: s["optimizer"]["param_groups"][0].update(lr="abc"),
                        "'optimizer' group 0['lr'] is 'abc', not this run's 0.005"),
    "lr-changed": (lambda s: s["optimizer"]["param_groups"][0].update(lr=0.5), "group 0['lr'] is 0.5, not this run"),
    "group-params": (lambda s: s["optimizer"]["param_groups"][0].update(params=[1, 0]),
                     "'optimizer' group 0['params'] is [1, 0], not this run's [0, 1]"),
    "group-missing-setting": (lambda s: s["optimizer"]["param_groups"][0].pop("eps"), "missing ['eps']"),
    # resumed silently, and stored a wrong row
    "steps-beyond-run": (lambda s: s["result"].update(steps=10**9),
                         "'result'['steps'] is 1000000000, more than this run's 2"),
    "best-step-beyond": (lambda s: s["result"].update(best_step=7), "'result'['best_step'] is 7, more than its 2"),
    "nan-steps-beyond": (lambda s: s["result"].update(nan_steps=3), "'result'['nan_steps'] is 3, more than its 2"),
    "best-above-range": (lambda s: s["result"].update(best_val_metric=7.5),
                         "'result'['best_val_metric'] is 7.5, outside the accuracy range [0.0, 1.0]"),
    "best-nan": (lambda s: s["result"].update(best_val_metric=float("nan")), "'result'['best_val_metric'] is nan"),
    "best-not-in-history": (lambda s: s["result"].update(best_val_metric=0.0123), "is not in its history"),
    "best-none-after-validations": (lambda s: s["result"].update(best_val_metric=None),
                                    "'result'['best_val_metric'] is None after validations"),
    "history-beyond-steps": (lambda s: s["result"]["history"][-1].update(step=5),
                             "'result'['history'][1] is at step 5, not after 1 and at most 2"),
    "history-short": (lambda s: s["result"]["history"].pop(), "'result'['history'] ends at step 1, not at"),
    "history-out-of-range": (lambda s: s["result"]["history"][0].update(val_metric=-0.5),
                             "'result'['history'][0] has accuracy -0.5, outside [0.0, 1.0]"),
    "stopped-early-without-patience": (lambda s: s["result"].update(stopped_early=True),
                                       "not this run's patience None"),
    "nan-weights": (set_weight("learner", float("nan")), "holds NaN or infinite values"),
    "inf-best-state": (set_weight("best_state", float("inf")), "'best_state'["),
    "adam-step-negative": (adam(0, "step", lambda t: torch.tensor(-1.0)),
                           "'optimizer' state 0['step'] is -1.0, not a count of at most 2 steps"),
    "adam-step-beyond": (adam(0, "step", lambda t: torch.tensor(3.0)), "state 0['step'] is 3.0, not a count"),
    "adam-step-fraction": (adam(0, "step", lambda t: torch.tensor(1.5)), "state 0['step'] is 1.5, not a count"),
    "adam-step-not-a-tensor": (adam(0, "step", lambda t: "2"), "state 0['step'] is '2', not a scalar float tensor"),
    "adam-state-deleted": (lambda s: s["optimizer"]["state"].pop(1),
                           "'optimizer' has state for parameters [0], not for all 2"),
    "adam-state-key-missing": (lambda s: s["optimizer"]["state"][0].pop("exp_avg_sq"),
                               "'optimizer' state 0 is ['exp_avg', 'step'], not"),
}


@pytest.mark.parametrize("tamper, words", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_malformed_checkpoint_is_refused_whole(host, synthetic, tmp_path, tamper, words):
    """Nothing of a checkpoint with one bad key is loaded: not the weights, not the optimizer state."""
    path = tmp_path / "k.pt"
    donor = make_trainer(host, synthetic, path, seed=1)
    donor.run()
    state = torch.load(path, weights_only=True)
    tamper(state)
    torch.save(state, path)

    trainer = make_trainer(host, synthetic, path)
    before = snapshot(trainer)
    # a partial load would show
    assert any(not torch.equal(v, donor.learner.state_dict()[k]) for k, v in before.items())
    with pytest.raises(CheckpointError) as info:
        trainer.try_resume()
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} ") and words in message and "\n" not in message
    assert "nothing was loaded from it" in message and "--restart" in message
    assert all(torch.equal(v, before[k]) for k, v in trainer.learner.state_dict().items())
    assert trainer.optimizer.state_dict()["state"] == {} and trainer.result == TrainResult(metric="accuracy")


def interrupt_after_first_checkpoint(cli, checkpoint_dir: Path, monkeypatch) -> None:
    """Run TINY until its first validation wrote the checkpoint, then interrupt it (as Ctrl-C would)."""
    validate, calls = MetaTrainer.validate, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return validate(self)

    monkeypatch.setattr(MetaTrainer, "validate", interrupted)
    assert run_tiny(cli, checkpoint_dir).code == 130
    monkeypatch.setattr(MetaTrainer, "validate", validate)


def tampered_interrupted_run(cli, tmp_path: Path, run_key: str, monkeypatch, tamper: str) -> Path:
    """The TINY run's checkpoint after an interruption, changed as ``TAMPERED[tamper]`` says."""
    interrupt_after_first_checkpoint(cli, tmp_path / "ck", monkeypatch)
    path = tmp_path / "ck" / f"{run_key}.pt"
    state = torch.load(path, weights_only=True)
    TAMPERED[tamper][0](state)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("tamper", ["no-best-state", "steps-beyond-run"])
def test_the_cli_refuses_a_tampered_checkpoint_in_one_line_and_restart_runs_over(cli, tmp_path, run_key, monkeypatch,
                                                                                 tamper):
    path = tampered_interrupted_run(cli, tmp_path, run_key, monkeypatch, tamper)
    one_line_error(run_tiny(cli, path.parent), f"checkpoint {path} is malformed (", TAMPERED[tamper][1],
                   "nothing was loaded from it", "--restart")
    assert path.exists()
    assert run_tiny(cli, path.parent, "--restart").code == 0


@pytest.mark.slow
def test_an_adam_moment_of_another_shape_is_refused_not_a_crash(cli, tmp_path, run_key, monkeypatch):
    """Unchecked, the fused Adam kernel read past the moment's end: the process died of SIGSEGV (so: a subprocess)."""
    path = tampered_interrupted_run(cli, tmp_path, run_key, monkeypatch, "exp-avg-shape")
    done = subprocess.run([sys.executable, "-m", "fewshot_bench.cli", "-q", "run", *TINY, "--checkpoint-dir",
                           str(path.parent)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    one_line_error(SimpleNamespace(code=done.returncode, out=done.stdout, err=done.stderr),
                   f"checkpoint {path} is malformed (", TAMPERED["exp-avg-shape"][1], "--restart")


def test_a_population_does_not_stack_members_at_different_adam_steps(host, synthetic, tmp_path):
    """Stacked members share one Adam step count: members resumed at the same step but different Adam steps (a
    count may lag the steps) train one after another, each with its own."""
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for path in paths:
        make_trainer(host, synthetic, path, seed=1).run()
    state = torch.load(paths[1], weights_only=True)
    for entry in state["optimizer"]["state"].values():
        entry["step"] = torch.tensor(1.0)
    torch.save(state, paths[1])
    members = [make_trainer(host, synthetic, path, steps=3) for path in paths]
    assert all(m.try_resume() for m in members)
    assert Population(members).probe() == "its members resumed at different Adam steps"
    # the lagging count is kept, as its run alone keeps it
    assert {float(st["step"]) for st in members[1].optimizer.state.values()} == {1.0}


# --- saved models and backbone checkpoints --------------------------------------------------


def test_load_model_refuses_a_planted_file(host, synthetic, tmp_path):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "m.model.pt", marker, learner="metasgd", config={}, task={})
    with pytest.raises(CheckpointError, match=f"saved model {path} holds a Python object"):
        load_model(host, path)
    assert not marker.exists()

    # A real saved model loads; one with a bogus task is refused naming the file.
    trainer = make_trainer(host, synthetic, None)
    good = save_model(trainer.learner, config_to_dict(trainer.learner.config), trainer.learner.task,
                      tmp_path / "good.model.pt")
    assert load_model(host, good).name == "metasgd"
    saved = torch.load(good, weights_only=True)
    saved["task"] = {"n_way": 5, "bogus": 1}
    torch.save(saved, tmp_path / "bad.model.pt")
    with pytest.raises(CheckpointError, match="is not a model saved by fewshot-bench .*'task'"):
        load_model(host, tmp_path / "bad.model.pt")


def test_the_backbone_checkpoint_loader_refuses_a_planted_file(tmp_path):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "c.pt", marker, format="fewshot-bench-backbone/1", backbone="conv4")
    with pytest.raises(CheckpointError, match=f"checkpoint {path} holds a Python object .*pretrain --restart"):
        load_checkpoint(path)
    assert not marker.exists()
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match=f"checkpoint {text} is corrupt or not a torch file"):
        load_checkpoint(text)
    torch.save({"format": "fewshot-bench-backbone/1", "backbone": "conv4"}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="is malformed \\(missing or mistyped: options, image"):
        load_checkpoint(tmp_path / "partial.pt")
