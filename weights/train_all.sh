#!/usr/bin/env bash
# Trains the shipped weights with `vsr train`, in the order they are needed.
# Every run checkpoints each epoch; re-running this script resumes unfinished runs
# (a finished run is skipped). Usage: VSR_DATA=../shared/data bash weights/train_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
run() {  # run ARCH SCALE EPOCHS [extra vsr train options]
  local arch=$1 scale=$2 epochs=$3; shift 3
  local out="weights/runs/${arch}_x${scale}"
  local resume=()
  if [ -f "$out/checkpoint.safetensors" ]; then resume=(--resume); fi
  python -m vsr train --data 91images --scale "$scale" --arch "$arch" --epochs "$epochs" \
    --out "$out" "${resume[@]}" "$@" --quiet
  cp "$out/srcnn_${arch}_x${scale}.safetensors" "vsr/model/weights/srcnn_${arch}_x${scale}.safetensors"
}
run 9-1-5 3 20
run 9-5-5 3 "${X3_EPOCHS:-40}"
run 9-5-5 2 "${X2_EPOCHS:-20}" --init vsr/model/weights/srcnn_9-5-5_x3.safetensors
run 9-5-5 4 "${X4_EPOCHS:-20}" --init vsr/model/weights/srcnn_9-5-5_x3.safetensors
run 9-1-5 2 10 --init vsr/model/weights/srcnn_9-1-5_x3.safetensors
run 9-1-5 4 10 --init vsr/model/weights/srcnn_9-1-5_x3.safetensors
finetune() {  # finetune SCALE EPOCHS LR FROM OUT [options]: continue $ARCH (default 9-5-5) weights FROM (a run folder) in OUT at LR
  local scale=$1 epochs=$2 lr=$3 from=$4 out=$5 arch=${ARCH:-9-5-5}; shift 5
  local start=(--init "${from}/srcnn_${arch}_x${scale}.safetensors")
  if [ -f "$out/checkpoint.safetensors" ]; then start+=(--resume); fi
  python -m vsr train --data 91images --scale "$scale" --arch "$arch" --epochs "$epochs" --lr "$lr" \
    --out "$out" "${start[@]}" "$@" --quiet
  cp "$out/srcnn_${arch}_x${scale}.safetensors" "vsr/model/weights/srcnn_${arch}_x${scale}.safetensors"
}
# Stage 2: long fine-tune of the 9-5-5 weights at a lower learning rate (the first stage
# plateaus below the paper; SRCNN keeps improving with many more updates).
# The x3 fine-tune was started with 120 epochs and cut to 60 after epoch 33 (CPU time ran short;
# `--epochs` may change on --resume, which reshapes the rest of the cosine).
finetune 3 "${X3_FT_EPOCHS:-60}" 2e-4 weights/runs/9-5-5_x3 weights/runs/9-5-5_x3_ft
finetune 2 "${X2_FT_EPOCHS:-30}" 2e-4 weights/runs/9-5-5_x2 weights/runs/9-5-5_x2_ft
finetune 4 "${X4_FT_EPOCHS:-30}" 2e-4 weights/runs/9-5-5_x4 weights/runs/9-5-5_x4_ft
# Stage 3: a longer, gentler fine-tune of the stage-2 x3 weights. Started with 200 epochs,
# stopped at 150 (it had flattened out at Set5 x3 32.58 dB).
finetune 3 "${X3_FT2_EPOCHS:-150}" 1e-4 weights/runs/9-5-5_x3_ft weights/runs/9-5-5_x3_ft2
# Stage 4: FSRCNN's scale augmentation of the 91 images (copies downscaled by 0.9-0.6, 3.3x the
# sub-images), with the mapping layer in bfloat16 for speed (about 2x on this AMX CPU).
# The three scales are independent: they ran at the same time (OMP_NUM_THREADS=1 each).
# Started with 120 epochs each, set to 75 after epoch 10 and to 100 after epoch 12 (session time;
# --epochs may change on --resume, which reshapes the rest of the cosine).
aug=(--scale-aug --precision bf16)
finetune 3 "${X3_AUG_EPOCHS:-100}" 1e-4 weights/runs/9-5-5_x3_ft2 weights/runs/9-5-5_x3_aug "${aug[@]}"
finetune 2 "${X2_AUG_EPOCHS:-100}" 2e-4 weights/runs/9-5-5_x2_ft weights/runs/9-5-5_x2_aug "${aug[@]}"
finetune 4 "${X4_AUG_EPOCHS:-100}" 2e-4 weights/runs/9-5-5_x4_ft weights/runs/9-5-5_x4_aug "${aug[@]}"
# Stage 4 for the fast 9-1-5 (x3, x2, x4): scale augmentation from the first runs, lr 5e-4, float32
# (started with 40 epochs, set to 15 after epoch 1: session time).
ARCH=9-1-5 finetune 3 "${F3_AUG_EPOCHS:-15}" 5e-4 weights/runs/9-1-5_x3 weights/runs/9-1-5_x3_aug --scale-aug
ARCH=9-1-5 finetune 2 "${F2_AUG_EPOCHS:-15}" 5e-4 weights/runs/9-1-5_x2 weights/runs/9-1-5_x2_aug --scale-aug
ARCH=9-1-5 finetune 4 "${F4_AUG_EPOCHS:-15}" 5e-4 weights/runs/9-1-5_x4 weights/runs/9-1-5_x4_aug --scale-aug
