#!/usr/bin/env bash
# `make gpu-bench`: the SimPO step benchmark on one H100/H200 node, in under 8 minutes, without a
# package registry (docs/benchmarks.md, "On a GPU"). bf16; Llama-3.2-1B's dimensions and 4 of
# Llama-3-8B's layers with the real 128k vocabulary; ours, its limit, TRL CPO-SimPO and TRL DPO;
# tokens/s, peak memory, MFU against the dense bf16 peak, and the attention operators each ran.
#   WHEELS=folder  install the pinned packages the node lacks from wheels brought along (pip --no-index)
#   DRY_RUN=1      the same script on CPU at a toy size (what tests/test_bench.py runs)
#   OUT=file.md    where the results block goes (default docs/benchmarks-gpu.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install --no-index --no-build-isolation --find-links "$WHEELS" -r requirements.txt
fi
if [ "${DRY_RUN:-0}" = 1 ]; then
  RUN=(--device cpu --dtype float32 --shapes body-heavy --batch 1 --steps 2 --warmup 1 --length_scale 0.05)
else
  # 989 TFLOP/s: H100/H200 dense bf16 peak (a plain 8192³ bf16 matmul measures ≈ 790 on an H200)
  RUN=(--device cuda --dtype bfloat16 --shapes llama-1b llama8b-layers --batch 4 --steps 5 --warmup 2
       --length_scale 1 --peak_tflops 989)
fi
exec "$PY" scripts/bench_simpo.py --output "${OUT:-docs/benchmarks-gpu.md}" "${RUN[@]}" --zero3_shapes \
  --seq_lens --vocab_sizes
