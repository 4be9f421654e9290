#!/usr/bin/env bash
# On one H100 or H200, in at most 9 minutes, each result written to $OUT as it goes (each JSON holds its command):
# 1. the CUDA test of the FP8 vision tower (eager against the float tower, graph replay against eager)     ~0.5 min
# 2. vision_fp8.py: SigLIP-L/16-384 as a graph, bf16 against --vision-fp8, at 1 / 16 / 32 / 64 frames        ~1 min
# 3. stream_fps.py, bf16 vision then --vision-fp8: one stream (bf16 and int8 weights), 16 and 32 streams       ~4 min
# 4. the CUDA test of every candidate tile config of the weight-only kernel (a compile each)                 ~2 min
# 5. narrate_e2e.py, frame by frame and --ahead 16, then int8 alone: memory with the weights held once      ~2 min
#   OUT=/tmp/out bash benchmarks/gpu_vision_fp8.sh       # from the repository root (wheels in .whl/ installed if there)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/benchmarks/gpu_steps.sh"
gpu_start gpu_vision_fp8
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step vision_test 60 env TRITON_INTERPRET=0 python3 -m pytest -q -p no:cacheprovider tests/engine/test_vision_fp8.py \
  -k cuda
step vision_fp8 90 python3 benchmarks/vision_fp8.py --out "$OUT/vision_fp8_${GPU}.json"
for vision in bf16 fp8; do
  flag=""; [[ $vision == fp8 ]] && flag="--vision-fp8"
  step "stream_fps_vision_$vision" 150 python3 benchmarks/stream_fps.py --parts single,int8,streams --scenarios silent \
    --frames 600 --streams 16,32 --stream-frames 600 $flag --out "$OUT/stream_fps_${GPU}_vision_${vision}.json"
done
step config_tests 130 env TRITON_INTERPRET=0 python3 -m pytest -q -p no:cacheprovider tests/engine/test_quant.py \
  -k every_candidate
step narrate_e2e 80 python3 benchmarks/narrate_e2e.py --scenarios silent --work /tmp/e2e --engines fast-1,fast \
  --out "$OUT/narrate_e2e_${GPU}_held_once.json"
step narrate_e2e_int8 60 python3 benchmarks/narrate_e2e.py --scenarios silent --work /tmp/e2e --engines fast-int8 \
  --out "$OUT/narrate_e2e_${GPU}_int8_held_once.json"
echo "== done in $((SECONDS - START)) s"
