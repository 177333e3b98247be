"""Print the markdown speed table of a ``pytest benchmarks --benchmark-json FILE`` run.

Usage: ``python benchmarks/speed_table.py FILE``. One row per benchmark (median seconds
per call, episodes per second), then the batched / per-episode-loop Meta-SGD ratios.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(report: dict) -> dict[str, tuple[float, float]]:
    """{benchmark name: (median seconds per call, episodes per second)} for benchmarks that store it."""
    out = {}
    for bench in report["benchmarks"]:
        eps = bench.get("extra_info", {}).get("episodes_per_s")
        if eps is not None:
            out[bench["name"]] = (bench["stats"]["median"], eps)
    return out


def main(argv: list[str]) -> int:
    """Print the table for the JSON file named in ``argv``; exit 1 with one line on bad input."""
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python benchmarks/speed_table.py BENCHMARK_JSON (the file pytest --benchmark-json wrote)")
        return 1
    table = rows(json.loads(Path(argv[0]).read_text()))
    print("| benchmark | median per call | episodes/s |")
    print("|---|---:|---:|")
    for name, (median, eps) in table.items():
        print(f"| `{name}` | {median * 1e3:,.2f} ms | {eps:,.0f} |")
    for shot in ("1shot", "5shot"):
        batched = table.get(f"test_metasgd_meta_train_step[{shot}]")
        loop = table.get(f"test_metasgd_meta_train_step_loop[{shot}]")
        if batched and loop:
            print(f"\nMeta-SGD meta-training step, batched / per-episode loop, {shot}: {batched[1] / loop[1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
