#!/usr/bin/env bash
# CUDA paths and GPU throughput in one short run (about 5 minutes on an H100):
#   1. tests/test_cuda.py: graph-captured steps equal eager steps, evaluation on the GPU equals
#      the CPU's, `fewshot-bench run --device cuda` with and without the CUDA graph;
#   2. the benchmark suite on the GPU (FEWSHOT_BENCH_DEVICE=cuda), JSON and a table;
#   3. a profiled LEO run on the GPU: 3,000 meta-training steps and 50,000 test episodes.
# Usage: benchmarks/gpu_check.sh [OUT_DIR]   (default: $OUT, else ./out; PYTHON picks the interpreter, default python3)
set -uo pipefail
out=${1:-${OUT:-out}}
mkdir -p "$out"
status=0
py=${PYTHON:-python3}

"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee "$out/gpu-device.txt" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/gpu-device.txt"

timeout 240 "$py" -m pytest tests/test_cuda.py -q -p no:cacheprovider -rs 2>&1 | tee "$out/gpu-tests.txt"
status=$((status | PIPESTATUS[0]))

FEWSHOT_BENCH_DEVICE=cuda timeout 300 "$py" -m pytest benchmarks/test_learners.py -q -p no:cacheprovider \
    --benchmark-json "$out/gpu-bench.json" --benchmark-columns=median,iqr,rounds 2>&1 | tee "$out/gpu-bench.txt"
status=$((status | PIPESTATUS[0]))
"$py" benchmarks/speed_table.py "$out/gpu-bench.json" | tee "$out/gpu-speed-table.md"

timeout 240 "$py" -m fewshot_bench run --learner leo --device cuda --steps 3000 --val-every 1000 --val-episodes 2000 \
    --episodes 50000 --profile --store "$out/gpu-results.db" 2>&1 | tee "$out/gpu-profile.txt"
status=$((status | PIPESTATUS[0]))
exit $status
