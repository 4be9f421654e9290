#!/usr/bin/env bash
# Reproduce the demo model: synthetic world -> frames -> vision pretraining -> LM training -> checkpoint.
#   bash scripts/train_demo_model.sh [all|data|vision|train]
# The defaults are v2's (docs/demo-model.md: then a 2-minute continued `train` stage; v3 adds 2 minutes on TRAIN_SEED=3
# videos, v4 and the bundled v5 4 minutes each on 900 videos of TRAIN_SEED=4, then 5). On one H200 (16 cores):
# data 4 min, vision 4.5 min (+1.5 min starting its data workers), train 8.4 min.
#
# Environment (defaults in brackets):
#   WORK            world, frames and held-out data                         [outputs/demo-work]
#   OUT             the LM stage's run; final model in $OUT/final            [outputs/demo-model-run]
#   PRESET          model shape: frame size for `data preprocess`, and the vision stage's start   [demo-resnet]
#   WORKERS         processes for rendering / preprocessing                  [nproc]
#   TRAIN_VIDEOS    training videos                                          [1800]
#   TRAIN_SEED      world seed of the training videos (a new seed gives new videos, e.g. to continue training)  [1]
#   HELDOUT_VIDEOS  held-out videos (world seed 2: evaluation, vision accuracy; never trained on)  [50]
#   VISION_OUT      vision stage output: final/ (checkpoint), vision_log.jsonl (throughput, loss, per-head
#                   held-out accuracy, JSON lines), vision_metrics.json      [$OUT/vision]
#   VISION_MINUTES  vision stage wall-clock budget, counted from its first batch   [4.5]
#   VISION_BATCH    frames per vision step                                   [256]
#   VISION_LR       vision stage learning rate                               [1e-3]
#   VISION_EVAL_EVERY  vision steps between held-out accuracy reports        [1000]
#   VISION_WORLD    the vision stage reads the recorded frames of this world (fast: nothing drawn in the loop);
#                   empty: it renders random episodes on the fly (how the bundled v1 was made)   [$WORK/train]
#   MODEL           the LM stage's start: a checkpoint or a preset           [$VISION_OUT/final]
#   MINUTES         LM stage wall-clock budget, counted from its first step  [8.4]
#   BATCH           conversations per LM step                                [16]
#   LM_VISION_LR    encoder learning rate in the LM stage (gentle: keeps what the vision stage taught)  [1e-4]
#   FREEZE_VISION   1: the LM stage leaves the encoder as the vision stage made it   [0]
#   GRAD_CKPT       1: gradient checkpointing in the LM stage (for a larger BATCH: the step is bound by per-op
#                   overhead, so more conversations a step is the cheap speed-up)   [0]
#   PRECISION       --bf16 on a GPU; empty on a CPU                          [--bf16]
#   CLI             the command                                              [videollm-online]
set -euo pipefail
STAGE=${1:-all}
WORK=${WORK:-outputs/demo-work}
OUT=${OUT:-outputs/demo-model-run}
PRESET=${PRESET:-demo-resnet}
WORKERS=${WORKERS:-$(nproc)}
TRAIN_VIDEOS=${TRAIN_VIDEOS:-1800}
TRAIN_SEED=${TRAIN_SEED:-1}
HELDOUT_VIDEOS=${HELDOUT_VIDEOS:-50}
VISION_OUT=${VISION_OUT:-$OUT/vision}
VISION_MINUTES=${VISION_MINUTES:-4.5}
VISION_BATCH=${VISION_BATCH:-256}
VISION_LR=${VISION_LR:-1e-3}
VISION_EVAL_EVERY=${VISION_EVAL_EVERY:-1000}
VISION_WORLD=${VISION_WORLD-$WORK/train}
MODEL=${MODEL:-$VISION_OUT/final}
MINUTES=${MINUTES:-8.4}
BATCH=${BATCH:-16}
LM_VISION_LR=${LM_VISION_LR:-1e-4}
FREEZE_VISION=${FREEZE_VISION:-0}
GRAD_CKPT=${GRAD_CKPT:-0}
CLI=${CLI:-videollm-online}
PRECISION=${PRECISION---bf16}  # PRECISION= (empty) on a CPU
# The world's video shape: the vision stage renders its frames with the same flags.
SIZE=256 VIDEO_FPS=2 TIME_GRID=0.5
WORLD="--size $SIZE --video-fps $VIDEO_FPS --time-grid $TIME_GRID --workers $WORKERS -q"

if [[ $STAGE == all || $STAGE == data ]]; then
  # Training videos (world seed 1 unless told) and held-out videos (world seed 2: no episode seed in common).
  [[ $TRAIN_SEED == 2 ]] && { echo "TRAIN_SEED 2 is the held-out world" >&2; exit 2; }
  $CLI data synth-world --out "$WORK/train" --videos "$TRAIN_VIDEOS" --seed "$TRAIN_SEED" $WORLD
  $CLI data synth-world --out "$WORK/heldout" --videos "$HELDOUT_VIDEOS" --seed 2 $WORLD
  for split in train heldout; do
    $CLI data preprocess "$WORK/$split/videos" --out "$WORK/$split/frames" --preset "$PRESET" --workers "$WORKERS" -q
  done
fi
if [[ $STAGE == all || $STAGE == vision ]]; then
  # The encoder learns to see: frames of the training videos (or of random episodes rendered on the fly; never the
  # held-out ones, which give the accuracy report), linear heads on its 10 frame tokens read what stands in each cell.
  SOURCE=""
  [[ -n $VISION_WORLD ]] && SOURCE="--world $VISION_WORLD"
  $CLI train-vision --model "$PRESET" --output-dir "$VISION_OUT" $SOURCE \
    --video-size $SIZE --video-fps $VIDEO_FPS --time-grid $TIME_GRID --heldout-seed 2 --heldout-videos "$HELDOUT_VIDEOS" \
    --max-time-minutes "$VISION_MINUTES" --batch-size "$VISION_BATCH" --learning-rate "$VISION_LR" \
    --workers $((WORKERS > 1 ? WORKERS - 1 : 0)) --eval-every "$VISION_EVAL_EVERY" --log-every 100 $PRECISION
fi
if [[ $STAGE == all || $STAGE == train ]]; then
  # SmolLM2-135M-Instruct + the pretrained encoder; LoRA r16 on every projection + lm_head, a fresh connector.
  TRAIN_FLAGS="--train-vision --vision-learning-rate $LM_VISION_LR"
  [[ $FREEZE_VISION == 1 ]] && TRAIN_FLAGS=""
  [[ $GRAD_CKPT == 1 ]] && TRAIN_FLAGS="$TRAIN_FLAGS --gradient-checkpointing"
  $CLI train --model "$MODEL" --data "$WORK/train/conversations.jsonl" --frames "$WORK/train/frames" \
    --eval-data "$WORK/heldout/conversations.jsonl" \
    --eval-frames "$WORK/heldout/frames" --output-dir "$OUT" \
    $TRAIN_FLAGS --lora-r 16 --lora-alpha 32 --learning-rate 4e-4 \
    --batch-size "$BATCH" --num-epochs 100 --max-time-minutes "$MINUTES" $PRECISION \
    --logging-steps 25 --eval-steps 400 --save-steps 400 --dataloader-workers 10 --save-dtype float16
fi
