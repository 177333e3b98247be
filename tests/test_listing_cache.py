"""`learners`, `datasets` and `plugins` replay a cached listing until something they list changes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fewshot_bench.console import listing_cache

pytest_plugins = ["plugin_tree"]

# Runs the CLI in a fresh interpreter and says on the last line of stderr whether torch was imported.
PROBE = (
    "import sys\n"
    "from fewshot_bench.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def listing(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``fewshot-bench ARGS`` in a new process with the listing cache in ``tmp_path/cache``."""
    environ = {**os.environ, "FEWSHOT_BENCH_CACHE_DIR": str(tmp_path / "cache"), **env}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=environ,
                          cwd=tmp_path, timeout=300)


def test_a_second_listing_is_replayed_without_importing_torch(tmp_path):
    first, second = listing(tmp_path, "learners"), listing(tmp_path, "learners")
    assert first.returncode == second.returncode == 0
    assert first.stderr.splitlines()[-1] == "torch imported"
    assert second.stderr.splitlines()[-1] == "no torch"
    assert second.stdout == first.stdout and "leo" in second.stdout
    as_json = listing(tmp_path, "learners", "--json")  # other options: computed, not the text replayed
    assert as_json.stdout.lstrip().startswith("[") and as_json.stderr.splitlines()[-1] == "torch imported"


def test_a_changed_setting_is_a_new_listing_not_a_stale_one(tmp_path):
    assert "maml" in listing(tmp_path, "learners").stdout
    disabled = listing(tmp_path, "learners", FEWSHOT_BENCH_DISABLE_PLUGINS="fewshot-bench-maml")
    assert "maml" not in disabled.stdout and disabled.stderr.splitlines()[-1] == "torch imported"
    fingerprints = {p.name[: len("listing-") + 32] for p in (tmp_path / "cache").glob("listing-*.json")}
    assert len(fingerprints) == 1  # the old fingerprint's entries are dropped


def test_an_error_is_never_cached(tmp_path):
    for _ in range(2):
        done = listing(tmp_path, "learners", "no-such-learner")
        assert done.returncode == 1 and "no-such-learner" in done.stderr
        assert done.stderr.splitlines()[-1] == "torch imported"


def test_off_writes_nothing(tmp_path):
    done = listing(tmp_path, "datasets", FEWSHOT_BENCH_CACHE_DIR="off")
    assert done.returncode == 0 and "synthetic" in done.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "off").exists()


def test_editing_a_plugin_file_changes_the_fingerprint(plugins_on_path, tmp_path):
    before = listing_cache.fingerprint()
    module = next(plugins_on_path.site.glob("fewshot_bench_cheats/*.py"))
    stat = module.stat()
    try:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert listing_cache.fingerprint() != before
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert listing_cache.fingerprint() == before


@pytest.mark.parametrize("value", ["off", "0", "false"])
def test_the_cache_can_be_turned_off(monkeypatch, value):
    monkeypatch.setenv(listing_cache.CACHE_ENV, value)
    assert listing_cache.cache_folder() is None


def test_a_command_that_loaded_the_plugins_leaves_the_plain_listings_cached(tmp_path):
    shown = listing(tmp_path, "learners", "leo")  # loads every plugin (and torch) to describe one learner
    assert shown.returncode == 0 and "latent_steps" in shown.stdout
    for command, expected in (("learners", "metasgd"), ("datasets", "synthetic"), ("plugins", "fewshot-bench-leo")):
        replayed = listing(tmp_path, command)
        assert replayed.returncode == 0 and expected in replayed.stdout
        assert replayed.stderr.splitlines()[-1] == "no torch", command


def test_a_failed_command_warms_nothing(tmp_path):
    failed = listing(tmp_path, "learners", "no-such-learner")
    assert failed.returncode == 1
    assert not list((tmp_path / "cache").glob("listing-*.json"))
