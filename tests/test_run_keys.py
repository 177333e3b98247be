"""Run keys are stable: the same command gives the key it gave before, so stored runs keep being found.

The keys of specs and configs below were computed by the code before RunSpec moved to
fewshot_bench.protocol.spec and sweep.Protocol was folded into it; a run key adds the data's identity
to them (``spec.with_data``). A key changes only when a run's identity does (a learner's
default config, what RunSpec.key hashes, or the data): then every stored run of it is
computed again, so such a change must be deliberate.
"""

from __future__ import annotations

import pytest

from fewshot_bench.cli import build_parser
from fewshot_bench.commands.run import protocol_of
from fewshot_bench.config import config_to_dict
from fewshot_bench.protocol.runner import resolve_config
from fewshot_bench.protocol.spec import RunSettings
from fewshot_bench.search.sweep import grid, plan
from fewshot_bench.search.tune import make_request
from fewshot_bench.workflows import run_spec


def key_of(host, spec) -> str:
    """The key of the spec and its config alone: what runs were keyed by before the data joined the key."""
    kind = host.dataset(spec.dataset).kind
    return spec.key_without_data(config_to_dict(resolve_config(host.learner(spec.learner), spec, kind)))


@pytest.mark.parametrize("args, key", [
    (["--learner", "metasgd"], "1d7554ec8d5567447cd2506b"),
    (["--learner", "leo"], "3e1cc7baa67baa946a1a3b9d"),
    (["--learner", "maml"], "9fdc790fe6e13610d533d609"),
    (["--learner", "logreg"], "de9d72ab4e2a0410f4c874af"),
    (["--learner", "nearest-centroid", "--shot", "5", "--seed", "3", "--steps", "10", "--episodes", "20",
      "--eval-query", "5", "--train-on-val"], "b818dd73ff6e7957a2ee5069"),
    (["--learner", "leo", "--hparams", "reference", "--set", "inner_lr_init=0.5"], "a93712fd32e1306b05cf6eaf"),
    (["--learner", "metasgd", "--dataset", "sines-lines"], "7c1221c3cd7ca47de5917a8f"),  # 1-way 5-shot regression
])
def test_a_run_command_keeps_its_key(host, args, key):
    assert key_of(host, run_spec(host, **protocol_of(build_parser().parse_args(["run", *args])))) == key


def test_a_sweep_keeps_its_cells_keys(host, tmp_path):
    """``sweep --learners leo,metasgd,nearest-centroid --shots 1,5 --seeds 2 --steps 10 --episodes 20``."""
    protocol = {**RunSettings(budget="paper", steps=10, episodes=20).budget_fields(), "train_on_val": True,
                "hparams": None, "crop": "center"}
    specs = grid(host, ["leo", "metasgd", "nearest-centroid"], ["synthetic"], [1, 5], [0, 1], None, **protocol)
    # Written when the data's identity joined the key (the synthetic generator's, version 1).
    assert [job.key for job in plan(host, specs, tmp_path / "none.db").pending] == [
        "83213d8217e74496c683d84b", "7cc6803bdfc913c08ad0ff17", "616fdd36df7a5471bc273adf", "58eca3c73e48cc93b9f3ecf1",
        "cebea41e0a4845af14edb801", "5335be2dd261ecb10a494712", "34f9e4819fe319412805ee51", "243283f282905f58583a0ee3",
        "9495b8dd2063f446d0dd14bf", "997d915ee401224a60629e83", "28df9f5defdee60344d34793", "5db120d42a42551c6ded4be7",
    ]


def test_a_search_keeps_its_study_name_and_trial_keys(host):
    request = make_request(host, "metasgd", RunSettings(way=5, shot=1, steps=10, val_every=5, val_episodes=10))
    assert request.study_name == "metasgd-synthetic-5way-1shot-9e24aa6f"
    assert key_of(host, request.spec({"inner_lr_init": "0.1"})) == "24a6bdb5e58f257d7fd6653f"
