#!/usr/bin/env bash
# On one H100 or H200, in at most 9 minutes, each result written to $OUT as it goes (each JSON holds its command):
# 1. the CUDA tests of the quantised kernel, narrate's staging and --ahead, and the decision rule            ~1 min
# 2. stream_fps.py: one stream, silent: bf16, fp8, int8, and the multi-frame mode                          ~2 min
# 3. fp8_matmul.py --quick: the weight-only kernel at 1 / 11 / 176 rows (--sweep: a grid of tiles and splits) ~1 min
# 4. narrate_e2e.py: narrate end to end on a 10-minute file, frame by frame, --ahead 16, fp8, int8           ~1 min
# 5. profile_step.py --weights fp8: where a quantised frame step's time goes                                ~1 min
# 6. the CUDA test of every candidate tile config (a compile each)                                           ~2 min
#   OUT=/tmp/out bash benchmarks/gpu_splitk.sh       # from the repository root (wheels in .whl/ installed if there)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/benchmarks/gpu_steps.sh"
gpu_start gpu_splitk
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step cuda_tests 100 env TRITON_INTERPRET=0 python3 -m pytest -q -p no:cacheprovider tests/engine/test_quant.py \
  tests/test_narrate_ahead.py tests/engine/test_frame_stager.py tests/test_decision_policy.py \
  -k "(cuda or stager or swap) and not every_candidate"
step stream_fps 200 python3 benchmarks/stream_fps.py --parts single,fp8,int8,multi --scenarios silent \
  --out "$OUT/stream_fps_${GPU}_splitk.json"
step fp8_matmul 120 python3 benchmarks/fp8_matmul.py --quick --no-scaled-mm \
  --out "$OUT/fp8_matmul_${GPU}_splitk.json"
step narrate_e2e 120 python3 benchmarks/narrate_e2e.py --scenarios silent --work /tmp/e2e \
  --engines fast-1,fast,fast-fp8,fast-int8 --out "$OUT/narrate_e2e_${GPU}_splitk.json"
step profile 80 python3 benchmarks/profile_step.py --weights fp8
step config_tests 120 env TRITON_INTERPRET=0 python3 -m pytest -q -p no:cacheprovider tests/engine/test_quant.py \
  -k every_candidate
echo "== done in $((SECONDS - START)) s"
