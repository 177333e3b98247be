"""Protocols: `compare`, `table` and `figure` never combine runs of different protocols and name the one
they used; `results` shows what tells runs apart; transductive learners are marked."""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict

import numpy as np
import pytest
from helpers import one_line_error

from fewshot_bench.errors import ConfigError, StoreError
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.records.store import ResultStore, RunRecord
from fewshot_bench.reports.combining import TRANSDUCTIVE_NOTE, choose, parse_learner_overrides, protocol_of
from fewshot_bench.reports.figure_runs import FigureRequest, check_overrides, figure_runs

EPISODES = 50


def add_run(store, learner, seed, acc, steps=200, shot=1, overrides=None, transductive=None, model=None,
            run_key=None, created_at=None, dataset="synthetic", hparams=None, data_id="d" * 24):
    """Store a run whose record has the runner's shape (options = the RunSpec and what the runner adds)."""
    rng = np.random.default_rng(zlib.crc32(f"{learner} {seed} {steps}".encode()))
    values = np.clip(acc + rng.normal(0, 0.05, EPISODES), 0, 1).astype(np.float32)
    spec = RunSpec(learner=learner, dataset=dataset, shot=shot, seed=seed, steps=steps, episodes=EPISODES,
                   val_every=min(100, steps), val_episodes=20, eval_query=5, train_on_val=True,
                   hparams=hparams, overrides=dict(overrides or {}))
    options = {**asdict(spec), "plugin": f"fewshot-bench-{learner}", "data_id": data_id}
    if transductive is not None:  # runs stored before the flag existed have no key
        options["transductive"] = transductive
    config = {"outer_lr": 0.001, **(overrides or {})}
    record = {
        "run_key": run_key or spec.key(config, data_id), "learner": learner, "dataset": dataset, "way": 5, "shot": shot,
        "seed": seed, "status": "complete", "metric": "accuracy", "mean": float(values.astype(np.float64).mean()),
        "ci95": 0.01,
        "episodes": EPISODES, "config": config, "options": options,
        "summary": {"train": {"meta_trained": True, "steps": steps, **({"model": model} if model else {})}},
        "versions": {}, "hardware": {}, "timings": {},
        **({"created_at": created_at} if created_at else {}),
    }
    return store.add_run(RunRecord.new(**record), values)


def protocol_id(path, run_id):
    with ResultStore(path, create=False) as s:
        return protocol_of(s.run(run_id)).id


@pytest.fixture
def mixed(tmp_path):
    """The user story: LEO at 200 steps; Meta-SGD at 200 steps (older) and at 30 steps (newer, better-looking)."""
    path = tmp_path / "mixed.db"
    with ResultStore(path) as s:
        ids = {
            "leo0": add_run(s, "leo", 0, 0.70, created_at="2024-01-01T00:00:00+00:00"),
            "leo1": add_run(s, "leo", 1, 0.71, created_at="2024-01-01T00:00:01+00:00"),
            "msgd0": add_run(s, "metasgd", 0, 0.68, created_at="2024-01-01T00:00:02+00:00"),
            "msgd1": add_run(s, "metasgd", 1, 0.69, created_at="2024-01-01T00:00:03+00:00"),
            "short0": add_run(s, "metasgd", 0, 0.60, steps=30, created_at="2024-01-02T00:00:00+00:00"),
            "short1": add_run(s, "metasgd", 1, 0.61, steps=30, created_at="2024-01-02T00:00:01+00:00"),
        }
    return path, ids


# --- the protocol of a run ---------------------------------------------------------------


def test_protocol_id_is_stable_and_readable(mixed):
    path, ids = mixed
    with ResultStore(path, create=False) as s:
        leo, msgd, short = (protocol_of(s.run(ids[k])) for k in ("leo0", "msgd1", "short0"))
    assert leo == msgd and leo.id == msgd.id and len(leo.id) == 8
    assert short.id != leo.id
    assert leo.description == (
        "steps=200 val_every=100 val_episodes=20 patience=20 episodes=50 eval_query=5 train_on_val=yes "
        "hparams=default crop=center"
    )
    assert "steps=30" in short.description


def test_overrides_are_per_learner_and_parsed():
    assert parse_learner_overrides(["maml.hidden_sizes=128,128", "maml.inner_lr=0.1", "leo.x=1"]) == {
        "maml": {"hidden_sizes": "128,128", "inner_lr": "0.1"}, "leo": {"x": "1"},
    }
    with pytest.raises(ConfigError, match="LEARNER.KEY=VALUE"):
        parse_learner_overrides(["hidden_sizes=128"])


def test_choose_picks_most_runs_and_says_so(mixed):
    path, _ = mixed
    with ResultStore(path, create=False) as s:
        runs = s.runs()
    sel = choose(runs)
    assert sel.protocol.get("steps") == 200 and len(sel.runs) == 4
    assert "several protocols" in sel.note() and "--protocol ID" in sel.note() and "steps=30" in sel.note()
    assert choose(runs, steps=30).protocol.get("steps") == 30
    assert choose(runs, protocol=sel.protocol.id[:4]).protocol == sel.protocol
    with pytest.raises(ConfigError, match=r"no runs with --steps 7; the store holds: .*steps=200.*steps=30"):
        choose(runs, steps=7)


# --- compare -----------------------------------------------------------------------------


def test_compare_pairs_only_runs_of_one_protocol(cli, mixed):
    path, ids = mixed
    r = cli("compare", "leo", "metasgd", "--dataset", "synthetic", "--shot", "1", "--store", path, "--json")
    assert r.code == 0, r.err
    (res,) = r.json()
    # Paired with the 200-step Meta-SGD runs, never with the newer 30-step ones.
    assert (sorted((p["run_a"], p["run_b"]) for p in res["seeds"])
            == sorted([(ids["leo0"], ids["msgd0"]), (ids["leo1"], ids["msgd1"])]))
    assert res["protocol"]["id"] == protocol_id(path, ids["leo0"])
    assert res["other_protocols"] == []  # the 30-step protocol has no LEO runs: nothing to pair there

    r = cli("compare", "leo", "metasgd", "--store", path)
    assert r.code == 0, r.err
    assert f"protocol {protocol_id(path, ids['leo0'])} (steps=200" in r.out
    assert "2 pair(s)" in r.out and "0-1" not in r.out and "0, 1" in r.out  # the seeds used

    r = cli("compare", "leo", "metasgd", "--steps", "30", "--store", path)
    one_line_error(r, "no runs of 'leo' and 'metasgd'", "steps=30", "steps=200")


def test_compare_with_two_paired_protocols_picks_one_and_names_the_other(cli, mixed):
    path, ids = mixed
    with ResultStore(path) as s:
        short_leo = add_run(s, "leo", 0, 0.55, steps=30)
    r = cli("compare", "leo", "metasgd", "--store", path)
    assert r.code == 0, r.err
    long_id, short_id = protocol_id(path, ids["leo0"]), protocol_id(path, short_leo)
    assert f"protocol {long_id}" in r.out and "several protocols" in r.out
    assert f"{short_id} (steps=30" in r.out and "1 paired seed" in r.out and "--protocol ID" in r.out

    r = cli("compare", "leo", "metasgd", "--protocol", short_id, "--store", path, "--json")
    assert r.code == 0, r.err
    (res,) = r.json()
    assert [(p["run_a"], p["run_b"]) for p in res["seeds"]] == [(short_leo, ids["short0"])]
    assert res["protocol"]["id"] == short_id and res["chosen_by"] == f"--protocol {short_id}"


def test_compare_uses_default_overrides_unless_asked(cli, tmp_path):
    path = tmp_path / "o.db"
    with ResultStore(path) as s:
        add_run(s, "maml", 0, 0.60)
        tuned = add_run(s, "maml", 0, 0.66, overrides={"hidden_sizes": "128,128"})
        add_run(s, "metasgd", 0, 0.62)
    r = cli("compare", "maml", "metasgd", "--store", path, "--json")
    (res,) = r.json()
    assert res["seeds"][0]["run_a"] != tuned and res["overrides_a"] == {}
    r = cli("compare", "maml", "metasgd", "--set", "maml.hidden_sizes=128,128", "--store", path)
    assert r.code == 0, r.err
    assert "maml [hidden_sizes=128,128]" in r.out
    r = cli("compare", "maml", "metasgd", "--set", "maml.hidden_sizes=64", "--store", path)
    assert r.code == 1 and "--set maml.hidden_sizes=128,128" in r.err


# --- table -------------------------------------------------------------------------------


def table_json(cli, path, *extra):
    r = cli("table", "1", "--dataset", "synthetic", "--format", "json", "--store", path, *extra)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    return data, {(c["learner"], c["shot"]): c for c in data["cells"]}


def test_table_uses_one_protocol_and_names_it(cli, mixed):
    path, ids = mixed
    data, cells = table_json(cli, path)
    long_id = protocol_id(path, ids["leo0"])
    assert data["protocol"]["id"] == long_id and data["chosen_by"] == "the one with the most cells"
    assert [p["id"] for p in data["other_protocols"]] == [protocol_id(path, ids["short0"])]
    assert cells[("metasgd", 1)]["run_ids"] == [ids["msgd0"], ids["msgd1"]]
    assert cells[("metasgd", 1)]["protocols"] == 2 and cells[("metasgd", 1)]["protocol"] == long_id

    # --steps 30: every row of the table under the 30-step protocol (LEO has none: missing, not mixed in).
    data, cells = table_json(cli, path, "--steps", "30")
    assert cells[("metasgd", 1)]["run_ids"] == [ids["short0"], ids["short1"]]
    assert cells[("leo", 1)]["mean"] is None and cells[("leo", 1)]["seeds"] == 0

    r = cli("table", "1", "--dataset", "synthetic", "--store", path)
    assert f"protocol {long_id} (steps=200" in r.out and "several protocols" in r.out and "--protocol ID" in r.out
    assert "runs used: 4 (seeds 0, 1" in r.out
    r = cli("table", "1", "--dataset", "synthetic", "--format", "csv", "--store", path)
    assert f",{long_id}," in r.out
    r = cli("table", "1", "--dataset", "synthetic", "--protocol", "ffffffff", "--store", path)
    assert r.code == 1 and "no runs for table 1 with --protocol ffffffff" in r.err and long_id in r.err


def test_table_row_never_silently_uses_overrides(cli, tmp_path):
    path = tmp_path / "t.db"
    with ResultStore(path) as s:
        add_run(s, "leo", 0, 0.70)
        tuned = add_run(s, "maml", 0, 0.66, overrides={"hidden_sizes": "128,128"})
    data, cells = table_json(cli, path)
    assert cells[("maml", 1)]["mean"] is None  # only runs with overrides: not shown as MAML's defaults
    assert any("--set maml.hidden_sizes=128,128" in n for n in data["notes"])

    with ResultStore(path) as s:
        default = add_run(s, "maml", 0, 0.60)
    data, cells = table_json(cli, path)
    assert cells[("maml", 1)]["run_ids"] == [default] and cells[("maml", 1)]["row"] == "MAML (our features)"

    data, cells = table_json(cli, path, "--set", "maml.hidden_sizes=128,128")
    assert cells[("maml", 1)]["run_ids"] == [tuned] and cells[("maml", 1)]["overrides"] == {"hidden_sizes": "128,128"}
    assert cells[("maml", 1)]["row"] == "MAML (our features) [hidden_sizes=128,128]"
    assert cells[("leo", 1)]["mean"] is not None  # other rows keep their defaults
    r = cli("table", "1", "--dataset", "synthetic", "--set", "metasgd2.x=1", "--store", path)
    assert r.code == 1 and "not in table 1" in r.err


def test_a_seed_is_counted_once(cli, tmp_path):
    path = tmp_path / "d.db"
    with ResultStore(path) as s:
        first = add_run(s, "leo", 0, 0.50, run_key="same")
        with pytest.raises(StoreError, match="already stored"):  # one run key, one complete row
            add_run(s, "leo", 0, 0.70, run_key="same")
        other = add_run(s, "leo", 1, 0.72)
    _, cells = table_json(cli, path)
    assert cells[("leo", 1)]["seeds"] == 2 and cells[("leo", 1)]["run_ids"] == [first, other]
    # A schema-1 store could hold the same run twice: counted once, the latest (tests/test_faults.py).


# --- results and the transductive mark ---------------------------------------------------


def test_results_shows_what_tells_runs_apart(cli, tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as s:
        add_run(s, "leo", 0, 0.70, hparams="reference")
        short = add_run(s, "maml", 0, 0.60, steps=30, overrides={"hidden_sizes": "128,128"})
    r = cli("results", "--store", path)
    assert r.code == 0, r.err
    header = r.out.splitlines()[0].split()
    assert {"steps", "preset", "overrides", "protocol"} <= set(header)
    maml = next(line for line in r.out.splitlines() if line.startswith(short))
    assert " 30 " in maml and "default" in maml and "hidden_sizes=128,128" in maml and protocol_id(path, short) in maml
    assert "reference" in next(line for line in r.out.splitlines() if " leo " in line)
    assert f"protocol {protocol_id(path, short)}: steps=30" in r.out
    r = cli("results", "--store", path, "--protocol", protocol_id(path, short), "--json")
    assert [run["run_id"] for run in r.json()] == [short] and r.json()[0]["protocol"] == protocol_id(path, short)


def test_transductive_runs_are_marked(cli, tmp_path):
    path = tmp_path / "tr.db"
    with ResultStore(path) as s:
        add_run(s, "leo", 0, 0.70, transductive=True)
        add_run(s, "metasgd", 0, 0.65)  # stored without the flag: inductive
    r = cli("results", "--store", path)
    assert "leo†" in r.out and "metasgd†" not in r.out and TRANSDUCTIVE_NOTE in r.out
    r = cli("table", "1", "--dataset", "synthetic", "--store", path)
    assert "| LEO†" in r.out and "| Meta-SGD (our features) " in r.out and TRANSDUCTIVE_NOTE in r.out
    r = cli("compare", "leo", "metasgd", "--store", path)
    assert "leo† - metasgd" in r.out and TRANSDUCTIVE_NOTE in r.out
    r = cli("compare", "leo", "metasgd", "--store", path, "--json")
    assert r.json()[0]["transductive_a"] is True and r.json()[0]["transductive_b"] is False
    data, cells = table_json(cli, path)
    assert cells[("leo", 1)]["transductive"] and not cells[("metasgd", 1)]["transductive"]


# --- figure 5 ----------------------------------------------------------------------------


def test_figure_5_pairs_leo_with_metasgd_of_its_seed_and_protocol(tmp_path, host):
    path = tmp_path / "f.db"
    with ResultStore(path) as s:
        leo0 = add_run(s, "leo", 0, 0.7, model="leo0.pt", created_at="2024-01-01T00:00:00+00:00")
        msgd0 = add_run(s, "metasgd", 0, 0.6, model="m0.pt", created_at="2024-01-01T00:00:01+00:00")
        add_run(s, "metasgd", 1, 0.6, model="m1.pt", created_at="2024-01-02T00:00:00+00:00")  # other seed
        short = add_run(s, "metasgd", 0, 0.6, steps=30, model="m30.pt", created_at="2024-01-03T00:00:00+00:00")
    with ResultStore(path, create=False) as s:
        chosen = figure_runs(s, host, FigureRequest(5))
        assert (chosen.record.run_id, chosen.baseline.run_id) == (leo0, msgd0)  # LEO declares Meta-SGD its baseline
        assert chosen.selection.protocol == protocol_of(chosen.record) and "steps=200" in chosen.selection.note()
        with pytest.raises(ConfigError, match="different protocols"):
            figure_runs(s, host, FigureRequest(5, run=leo0, baseline_run=short))
        with pytest.raises(ConfigError, match="no runs of leo with a matching metasgd run with --steps 30"):
            figure_runs(s, host, FigureRequest(5, steps=30))


def test_figures_draw_the_learners_that_declare_them_and_their_declared_baseline(tmp_path, host):
    """A plugin learner declaring figures 4 and 5 (baseline: MAML) is drawn like LEO; an LEO ablation, which
    declares no figure, never is by default."""
    import types

    from fewshot_bench.api.hooks import hookimpl
    from fewshot_bench.plugin_host import load_plugins

    latent = types.ModuleType("latent_learners")

    @hookimpl
    def fewshot_bench_register_learners(register):
        class Latent(host.learner("metasgd")):
            name = "latent"
            figures = (4, 5)
            figure_baseline = "maml"

        register(Latent)

    latent.fewshot_bench_register_learners = fewshot_bench_register_learners
    with_latent = load_plugins(extra=[("latent", latent)])
    path = tmp_path / "d.db"
    with ResultStore(path) as s:
        add_run(s, "leo", 0, 0.7, model="leo.pt", created_at="2024-01-01T00:00:00+00:00")
        own = add_run(s, "latent", 0, 0.7, model="l.pt", created_at="2024-01-02T00:00:00+00:00")
        add_run(s, "metasgd", 0, 0.6, model="m.pt", created_at="2024-01-02T00:00:01+00:00")
        maml = add_run(s, "maml", 0, 0.6, model="a.pt", created_at="2024-01-02T00:00:02+00:00")
        add_run(s, "leo-deterministic", 0, 0.7, model="d.pt", created_at="2024-01-03T00:00:00+00:00")
    with ResultStore(path, create=False) as s:
        assert figure_runs(s, with_latent, FigureRequest(4)).record.run_id == own  # the latest declaring run
        chosen = figure_runs(s, with_latent, FigureRequest(5))
        assert (chosen.record.run_id, chosen.baseline.run_id) == (own, maml)
    check_overrides(with_latent, {"latent": {"outer_lr": "0.1"}, "maml": {"outer_lr": "0.1"}})
    with pytest.raises(ConfigError, match="use leo.KEY=VALUE or metasgd.KEY=VALUE$"):
        check_overrides(host, {"maml": {"outer_lr": "0.1"}})


def test_figure_5_refuses_mixed_protocols_from_real_runs(cli):
    """Real tiny runs: LEO at 20 steps, Meta-SGD at 10; figure 5 refuses until Meta-SGD has a 20-step run."""
    short = ("--val-every", "10", "--val-episodes", "20", "--episodes", "20", "--eval-query", "5", "--json")
    leo = cli("run", "--learner", "leo", "--steps", "20", *short)
    assert leo.code == 0, leo.err
    assert cli("run", "--learner", "metasgd", "--steps", "10", *short).code == 0
    with ResultStore("fewshot-results.db", create=False) as s:
        (leo_run,) = s.runs(learner="leo")
    assert leo_run.options["transductive"] is False  # the runner records the flag

    refused = cli("figure", "5", "--out", "f5.png", "--episodes", "20")
    one_line_error(refused, "no metasgd run", "protocol", "steps=20")

    msgd = cli("run", "--learner", "metasgd", "--steps", "20", *short)
    assert msgd.code == 0, msgd.err
    five = cli("figure", "5", "--out", "f5.png", "--episodes", "20", "--json")
    assert five.code == 0, five.err
    out = five.json()
    assert (out["run"], out["baseline_run"]) == (leo.json()["run_id"], msgd.json()["run_id"])
    assert out["protocol"] == protocol_of(leo_run).id and "steps=20" in out["protocol_description"]
    text = cli("figure", "5", "--out", "f5.png", "--episodes", "20")
    assert text.code == 0 and f"protocol {out['protocol']}" in text.out and msgd.json()["run_id"] in text.out


def test_store_error_for_unpaired_learners(tmp_path):
    from fewshot_bench.reports.paired import compare

    path = tmp_path / "u.db"
    with ResultStore(path) as s:
        add_run(s, "leo", 0, 0.7)
        add_run(s, "metasgd", 1, 0.6)
        with pytest.raises(StoreError, match="share a"):
            compare(s, "leo", "metasgd")
