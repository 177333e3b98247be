"""What every timing module shares: subnormals flushed, and the thread count and device under test.

``FEWSHOT_BENCH_THREADS`` is read as ``fewshot-bench run`` reads it (fewshot_bench.protocol.threads;
unset or auto: torch's default, one thread per core; free: the cores other processes leave free at
import). On a shared 2-core machine another busy process makes 2 OpenMP threads stall ~200 ms at
their barriers; 1 thread avoids that.
``FEWSHOT_BENCH_DEVICE=cuda`` runs the suite on the GPU.
"""

from __future__ import annotations

import os

import torch

from fewshot_bench.protocol.threads import FREE, free_cores, requested_threads

# Inner loops can produce subnormals, ~100x slower on CPU; the CLI flushes them too.
torch.set_flush_denormal(True)
_REQUESTED = requested_threads()[0]
THREADS = free_cores() if _REQUESTED == FREE else (_REQUESTED or torch.get_num_threads())
torch.set_num_threads(THREADS)
DEVICE = torch.device(os.environ.get("FEWSHOT_BENCH_DEVICE", "cpu"))
