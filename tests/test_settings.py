"""One definition of a run's settings (fewshot_bench.protocol.spec.RunSettings): `run`, `sweep` and `tune` take
the same options for the settings they share, the budget is resolved once (a run's rules and a trial's), and
`tune` names its study's metric (accuracy, or MSE for regression)."""

from __future__ import annotations

import dataclasses

import pytest

from fewshot_bench.cli import build_parser
from fewshot_bench.errors import ConfigError
from fewshot_bench.protocol.spec import TUNE_STAGE, RunSettings

COMMANDS = ("run", "sweep", "tune")
# Where a run computes, reads and writes: options of all three commands besides the settings.
PLACES = {"device", "data_dir", "store", "checkpoint_dir"}


def options(command: str) -> dict[str, object]:
    """The options of ``command``'s parser by destination."""
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {action.dest: action for action in sub._actions if action.option_strings}


def test_run_sweep_and_tune_take_the_same_options_for_the_settings_they_share():
    fields = {f.name: f for f in dataclasses.fields(RunSettings)}
    by_command = {command: options(command) for command in COMMANDS}
    shared = set.intersection(*(set(opts) for opts in by_command.values()))
    assert {"dataset", "way", "budget", "steps", "val_every", "val_episodes", "patience", "crop"} | PLACES <= shared
    for dest in shared & (set(fields) | PLACES):
        run, sweep, tune = (by_command[c][dest] for c in COMMANDS)
        assert run.option_strings == sweep.option_strings == tune.option_strings, dest
        assert run.choices == sweep.choices == tune.choices, dest
        if dest != "dataset":  # sweep's datasets are a grid axis: several names, comma-separated
            assert run.type == sweep.type == tune.type, dest
    # Every option that sets a run's setting comes from its field: its flag and help, in each command.
    for command, opts in by_command.items():
        for dest, action in opts.items():
            if dest in fields:
                assert action.help.startswith(fields[dest].metadata["help"]), (command, dest)
    assert {"--set", "--shot", "--episodes", "--eval-query", "--hparams"} <= {
        s for a in by_command["run"].values() for s in a.option_strings}


def test_the_three_commands_parse_a_shared_setting_alike():
    given = ["--dataset", "sines-lines", "--way", "1", "--budget", "quick", "--steps", "3", "--val-every", "2",
             "--val-episodes", "4", "--patience", "0", "--crop", "multiview", "--device", "cpu"]
    parsed = {c: build_parser([c]).parse_args([c, *given, *(["--learner", "x"] if c == "run" else [])])
              for c in COMMANDS}
    for dest in ("way", "budget", "steps", "val_every", "val_episodes", "patience", "crop", "device"):
        assert len({getattr(args, dest) for args in parsed.values()}) == 1, dest
    assert parsed["run"].dataset == parsed["tune"].dataset == "sines-lines" and parsed["sweep"].dataset == [
        ["sines-lines"]]
    assert parsed["sweep"].train_on_val and build_parser(["sweep"]).parse_args(["sweep"]).budget == "paper"


def test_a_run_may_take_no_steps_and_a_trial_takes_at_least_one_within_its_validations():
    assert RunSettings(steps=0).budget_fields()["steps"] == 0
    with pytest.raises(ConfigError, match="--steps must be at least 1"):
        RunSettings(steps=0, stage=TUNE_STAGE).budget_fields()
    with pytest.raises(ConfigError, match="--val-every must be at least 1"):
        RunSettings(val_every=0).budget_fields()
    trial = RunSettings(steps=6, val_every=10, val_episodes=4, stage=TUNE_STAGE).budget_fields()
    assert trial["val_every"] == 6 and trial["episodes"] == 4  # validated within its steps, scored on validation
    assert RunSettings(steps=6, val_every=10).budget_fields()["val_every"] == 10


def test_tune_on_a_regression_dataset_reports_its_score_as_mse(cli, tmp_path):
    r = cli("tune", "--learner", "metasgd", "--dataset", "sines-lines", "--space", "outer_lr=log:1e-4..1e-2",
            "--trials", "1", "--steps", "2", "--val-every", "1", "--val-episodes", "5", "--workers", "1",
            "--store", tmp_path / "mse.db")
    assert r.code == 0, r.err
    assert "scored by its best validation MSE" in r.out
    best = next(line for line in r.out.splitlines() if line.startswith("best: trial 0"))
    assert "validation MSE " in best and "%" not in best and "accuracy" not in r.out
    shown = cli("tune", "show", "--learner", "metasgd", "--dataset", "sines-lines", "--space",
                "outer_lr=log:1e-4..1e-2", "--steps", "2", "--val-every", "1", "--val-episodes", "5",
                "--store", tmp_path / "mse.db")
    assert shown.code == 0, shown.err
    assert "score best validation MSE" in shown.out


def test_the_python_face_takes_settings_or_their_fields(host, tmp_path):
    import fewshot_bench as fb

    tiny = {"steps": 0, "episodes": 20, "eval_query": 5}
    a = fb.run("nearest-centroid", settings=RunSettings(shot=5, **tiny), store=tmp_path / "s.db", host=host)
    b = fb.run("nearest-centroid", shot=5, store=tmp_path / "s.db", host=host, **tiny)
    assert b.reused and a.run_key == b.run_key
    with pytest.raises(TypeError, match="'shots'"):
        fb.run("nearest-centroid", shots=5, store=tmp_path / "s.db", host=host)
    with pytest.raises(TypeError, match="'shot'"):
        fb.sweep(["nearest-centroid"], shot=5, store=tmp_path / "s.db", host=host)
