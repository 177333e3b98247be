"""``python -m fewshot_bench``: the same as the ``fewshot-bench`` command."""

from fewshot_bench.cli import main

raise SystemExit(main())
