#!/usr/bin/env bash
# Train models/default/ from scratch: the five runs that produced the shipped checkpoint
# (dev-time; PyTorch CPU, 2 threads, seeded; about 2.5 hours on this project's 2-core machine).
#
#   bash scripts/train_default_model.sh [OUT]        # OUT defaults to models/default
#
# Each stage keeps its best validation checkpoint (float16) and the next one starts from it:
#   1. vision pre-training on per-patch targets, then the answer loss (batch 32)
#   2. the answer loss with an attention curriculum (questions see only object patches) for 400
#      steps; 600 steps of a 1000-step cosine
#   3. per-patch position targets (column, left/right half) and side questions keyed by colour, so
#      that the image features carry x positions again; 400 steps of an 1800-step cosine
#   4. as 3, with half of the questions restricted to the patches of the objects they name; 400
#      steps of a 1600-step cosine (the decoder learns to read positions, but only when restricted)
#   5. as 4 with three quarters of the questions restricted and a growing random share of the
#      other patches shown to them (all by step 800 of 1200), so that it learns to find the object
# Splits, per-stage logs and the final test report go to $WORK (default $TMPDIR/small-vlm-train).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-models/default}
WORK=${WORK:-${TMPDIR:-/tmp}/small-vlm-train}
mkdir -p "$WORK"
export OMP_WAIT_POLICY=PASSIVE
train() { python scripts/train_small_vlm.py --data "$WORK/scenes" --data-seed 0 --threads 2 --compile \
  --t-inter 512 --aux-weight 0.5 --extra-count 3 --extra-exists 3 --warmup 30 --val-count 500 --test-count 1000 "$@"; }
position=(--aux-column 0.5 --aux-half 1.0 --side-by-color --side-loss-weight 2 --zero-init-probes)

train --out "$WORK/stage1" --seed 0 --vision-steps 400 --vision-batch 32 --vision-pre-lr 2e-3 \
  --steps 350 --batch 32 --lr 1e-3 --eval-every 70 --no-test 2>&1 | tee "$WORK/stage1.log"
train --out "$WORK/stage2" --init-from "$WORK/stage1" --seed 1 --steps 1000 --stop-at 600 --batch 16 --lr 1e-3 \
  --guide-steps 400 --eval-every 100 --no-test 2>&1 | tee "$WORK/stage2.log"
train --out "$WORK/stage3" --init-from "$WORK/stage2" --seed 2 --steps 1800 --stop-at 400 --batch 16 --lr 5e-4 \
  "${position[@]}" --eval-every 200 --no-test 2>&1 | tee "$WORK/stage3.log"
train --out "$WORK/stage4" --init-from "$WORK/stage3" --seed 3 --steps 1600 --stop-at 400 --batch 16 --lr 5e-4 \
  "${position[@]}" --focus-steps 1000 --focus-fraction 0.5 --eval-every 200 --no-test 2>&1 | tee "$WORK/stage4.log"
train --out "$OUT" --init-from "$WORK/stage4" --seed 4 --steps 1200 --batch 16 --lr 5e-4 \
  "${position[@]}" --focus-steps 800 --focus-fraction 0.75 --focus-anneal --eval-every 200 \
  --report "$WORK/report.json" 2>&1 | tee "$WORK/stage5.log"
