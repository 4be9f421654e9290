#!/usr/bin/env bash
# Reproduce the bundled demo model: synthetic world -> frames -> training -> checkpoint.
# Ran on one H100 (nvidia-h100-x1): the data stage in ~2 minutes on 16 cores, the train stage in ~6.
#   bash scripts/train_demo_model.sh [all|data|train]     (WORK, OUT, MINUTES, ... below)
set -euo pipefail
STAGE=${1:-all}
WORK=${WORK:-outputs/demo-work}
OUT=${OUT:-outputs/demo-model-run}
WORKERS=${WORKERS:-$(nproc)}
TRAIN_VIDEOS=${TRAIN_VIDEOS:-1000}
MINUTES=${MINUTES:-5}
BATCH=${BATCH:-16}
CLI=${CLI:-videollm-online}
MODEL=${MODEL:-demo}  # a preset (fresh connector) or a checkpoint to continue from
PRECISION=${PRECISION---bf16}  # PRECISION= (empty) on a CPU
WORLD="--size 256 --video-fps 2 --time-grid 0.5 --workers $WORKERS -q"

if [[ $STAGE == all || $STAGE == data ]]; then
  # Training videos (world seed 1) and held-out videos (world seed 2: no episode seed in common).
  $CLI data synth-world --out "$WORK/train" --videos "$TRAIN_VIDEOS" --seed 1 $WORLD
  $CLI data synth-world --out "$WORK/heldout" --videos 50 --seed 2 $WORLD
  for split in train heldout; do
    $CLI data preprocess "$WORK/$split/videos" --out "$WORK/$split/frames" --preset demo --workers "$WORKERS" -q
  done
fi
if [[ $STAGE == all || $STAGE == train ]]; then
  # SmolLM2-135M-Instruct + a 4-layer SigLIP-shaped encoder from scratch; LoRA r16 on every projection + lm_head.
  $CLI train --model "$MODEL" --data "$WORK/train/conversations.jsonl" --frames "$WORK/train/frames" \
    --eval-data "$WORK/heldout/conversations.jsonl" \
    --eval-frames "$WORK/heldout/frames" --output-dir "$OUT" \
    --train-vision --lora-r 16 --lora-alpha 32 --learning-rate 4e-4 --vision-learning-rate 1e-3 \
    --batch-size "$BATCH" --num-epochs 100 --max-time-minutes "$MINUTES" $PRECISION \
    --logging-steps 25 --eval-steps 400 --save-steps 400 --dataloader-workers 10 --save-dtype float16
fi
