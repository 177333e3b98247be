"""Faults found by trying to break the harness (issue 22, round three): values that exhaust memory or time, the
Python face given the wrong types, wrong blame, a planted listing cache. Each test reproduces one.

Every case is one line and a non-zero exit on the command line (a TypeError or ValueError naming the argument
from Python), before any work, with nothing stored and memory bounded.
"""

from __future__ import annotations

import json
import resource

import pytest
from helpers import one_line_error

import fewshot_bench as fb
from fewshot_bench.console import listing_cache
from fewshot_bench.protocol.spec import RunSettings

TINY = ("--learner", "metasgd", "--steps", "2", "--val-every", "1", "--val-episodes", "2", "--episodes", "5",
        "--eval-query", "2")
TINY_KW = {"steps": 2, "val_every": 1, "val_episodes": 2, "episodes": 5, "eval_query": 2}


@pytest.fixture
def bounded_memory():
    """An address-space limit 2 GiB above what the process has mapped now: a huge allocation fails instead of
    swapping the machine."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    before = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 2 * 2**30, before[1]))
    yield
    resource.setrlimit(resource.RLIMIT_AS, before)


# --- values that exhaust memory or time ----------------------------------------------------------


@pytest.mark.parametrize(
    "args,words",
    [
        (("--seeds", "0-99999999999"), "100,000,000,000 seeds in one command: at most 1,000,000, even with"),
        (("--seeds", "0-1000000"), "1,000,001 seeds in one command"),
        (("--seeds", "0-10000"), "10,001 seeds in one command: more than 10,000; pass --allow-large"),
        (("--set", "inner_steps=100000000"), "--set inner_steps=100000000: more than 1,000,000; pass --allow-large"),
        (("--steps", "2000000"), "--steps 2,000,000: more than 1,000,000"),
        (("--allow-large", "--steps", "99999999999999999999"), "at most 2,147,483,647, even with --allow-large"),
        (("--threads", "3000000000"), "--threads=3000000000: at most"),
    ],
)
def test_counts_beyond_the_machine_are_one_line_before_any_work(cli, tmp_path, bounded_memory, args, words):
    r = cli("run", *TINY, *args, "--store", tmp_path / "r.db")
    one_line_error(r, words)
    assert r.out == "" and not (tmp_path / "r.db").exists()
    assert not list(tmp_path.glob(".write-test-*"))


def test_thread_count_in_the_environment_is_bounded_by_the_cores(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_BENCH_THREADS", "99999999999999999999")
    one_line_error(cli("run", *TINY, "--store", tmp_path / "r.db"), "FEWSHOT_BENCH_THREADS=", "core(s) this process")
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "1e400G", "0.1"])
def test_population_memory_must_be_a_finite_positive_size(cli, tmp_path, monkeypatch, value):
    monkeypatch.setenv("FEWSHOT_BENCH_POPULATION_MEMORY", value)
    one_line_error(cli("run", *TINY, "--seeds", "0-1", "--store", tmp_path / "r.db"), "is not a size")
    assert not (tmp_path / "r.db").exists()


def test_a_huge_seed_range_from_python_allocates_nothing(tmp_path, bounded_memory):
    for seeds in (range(10**12), (seed for seed in range(10**12))):
        with pytest.raises(ValueError, match="seeds in one command"):
            fb.run("metasgd", seeds=seeds, store=tmp_path / "r.db", **TINY_KW)
    assert not (tmp_path / "r.db").exists()


def test_allow_large_lets_a_large_count_through_and_is_not_part_of_the_run():
    with pytest.raises(ValueError, match="--allow-large"):
        RunSettings(steps=2_000_000)
    with pytest.raises(ValueError, match="--set hidden_sizes=2000000"):
        RunSettings(overrides={"hidden_sizes": "40,2000000"})
    large = RunSettings(way=5, shot=1, steps=2_000_000, overrides={"inner_steps": 2_000_000}, allow_large=True)
    assert large.spec("metasgd").steps == 2_000_000
    small = {"way": 5, "shot": 1, "steps": 5}
    assert RunSettings(**small, allow_large=True).spec("metasgd") == RunSettings(**small).spec("metasgd")


# --- the Python face -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        ({"seed": "0"}, TypeError, "seed must be a whole number"),
        ({"seed": 1.5}, ValueError, "seed must be a whole number"),
        ({"seed": True}, TypeError, "seed must be a whole number, not True"),
        ({"shot": "1"}, TypeError, "shot must be a whole number"),
        ({"steps": "30"}, TypeError, "steps must be a whole number"),
        ({"steps": 1.5}, ValueError, "steps must be a whole number"),
        ({"val_every": 7.5}, ValueError, "val_every must be a whole number"),
        ({"dataset": 5}, TypeError, "dataset must be a name"),
        ({"overrides": ["inner_steps=2"]}, TypeError, "overrides must map Config keys"),
        ({"hparams": 5}, TypeError, "hparams must be a name or None"),
        ({"train_on_val": 1}, TypeError, "train_on_val must be True or False"),
        ({"crop": "nope"}, ValueError, "--crop 'nope': dataset 'synthetic' offers center"),
        ({"seeds": "3-1"}, ValueError, "seeds '3-1': give one or more distinct seeds"),
        ({"seeds": 5}, TypeError, "seeds must be an iterable"),
        ({"population_size": "2", "seeds": [0, 1]}, TypeError, "population_size must be a whole number"),
    ],
)
def test_python_arguments_are_checked_and_named(tmp_path, kwargs, error, words):
    with pytest.raises(error, match=words) as caught:
        fb.run("metasgd", store=tmp_path / "r.db", **(TINY_KW | kwargs))
    assert isinstance(caught.value, fb.FewshotBenchError)  # and one line on the command line
    assert not (tmp_path / "r.db").exists()


def test_whole_floats_and_numpy_ints_are_the_runs_the_command_line_makes(host):
    import numpy as np

    from fewshot_bench.workflows import run_spec

    plain = run_spec(host, "metasgd", shot=1, episodes=50, seed=3)
    assert run_spec(host, "metasgd", shot=1.0, episodes=np.int64(50), seed=3) == plain
    assert type(run_spec(host, "metasgd", shot=np.int32(1)).shot) is int


def test_crop_on_the_command_line_is_one_the_dataset_offers(cli, tmp_path):
    r = cli("run", *TINY, "--crop", "multiview", "--store", tmp_path / "r.db")
    one_line_error(r, "--crop 'multiview': dataset 'synthetic' offers center")
    assert not (tmp_path / "r.db").exists()


# --- wrong blame ---------------------------------------------------------------------------------


def test_a_shot_that_leaves_no_query_blames_the_shot(cli, tmp_path):
    r = cli("run", *TINY[:-2], "--shot", "600", "--store", tmp_path / "r.db")
    line = one_line_error(r, "--shot 600", "600 examples per class", "give --shot below 600")
    assert "Q=0" not in line and not (tmp_path / "r.db").exists()


# --- the listing cache ---------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The listing cache on, in a fresh folder; returns a function that lists ``learners`` through it."""
    monkeypatch.setenv(listing_cache.CACHE_ENV, str(tmp_path / "cache"))
    calls = []

    def produce() -> int:
        calls.append(1)
        print("metasgd  a learner")
        return 0

    def listing(capsys) -> tuple[str, int]:
        code = listing_cache.print_cached("learners", produce)
        return capsys.readouterr().out, code

    listing.calls = calls
    return listing


def _signed_like_the_cache(entry: dict, stdout: str) -> dict:
    """A well-formed entry with a valid check, as anyone who read the module could plant it."""
    return listing_cache._entry(entry["key"], entry["fingerprint"], stdout, "")


@pytest.mark.parametrize(
    "planted",
    [
        lambda text: text[:-1] + ', "code": 1e400}',  # a non-finite exit code (was an OverflowError)
        lambda text: text.replace("metasgd", "\\u001b]0;pwned\\u0007\\u001b[2Jmetasgd"),  # terminal escapes
        lambda text: text.replace("metasgd", "something else"),  # well-formed, but not what was written
        lambda text: text[:-1] + ', "check": NaN}',
        lambda text: json.dumps(_signed_like_the_cache(json.loads(text), "\x1b[2J\x1b]0;pwned\x07metasgd\n")),
    ],
)
def test_a_planted_listing_cache_is_not_replayed(cache, tmp_path, capsys, planted):
    assert cache(capsys) == ("metasgd  a learner\n", 0)
    assert cache(capsys) == ("metasgd  a learner\n", 0) and len(cache.calls) == 1  # replayed
    (path,) = (tmp_path / "cache").glob("listing-*.json")
    path.write_text(planted(path.read_text()))
    assert cache(capsys) == ("metasgd  a learner\n", 0) and len(cache.calls) == 2  # computed afresh
