#!/usr/bin/env bash
# Issue 12, the warm-start route: the bundled model (FER2013 only) rebuilt from default.onnx with trainable
# BatchNorms, optionally pruned to a narrower VGGNet (scripts/warm_start.py), then one more cosine cycle on
# the mixing grid's choice (FER2013 Training + AffectNet at aux_ratio 0.5, class-balanced, the world
# augmentation, aux_crop 0.8, selected on the mean of PublicTest and the AffectNet held-out part) at half
# the cpu config's peak learning rate, as the bundled model's own last cycle. Resumable: rerun it.
#   bash scripts/default_model_finetune.sh ../shared/data/fer2013 ../shared/data/affectnet vgg_fer_w24 16 [THREADS]
# SOURCE=FILE.onnx starts from another graph than the bundled one; the default model shipped before issue 12
# is `git show f593749:src/ferkit/weights/default.onnx > prev.onnx`.
# Writes runs/warm/SHORT.pt (the start) and runs/ft-SHORT/ (the run), SHORT being MODEL without vgg_fer_.
set -euo pipefail
DATA=${1:?usage: default_model_finetune.sh FER2013 AFFECTNET MODEL EPOCHS [THREADS]}
AUX=${2:?usage: default_model_finetune.sh FER2013 AFFECTNET MODEL EPOCHS [THREADS]}
MODEL=${3:?usage: default_model_finetune.sh FER2013 AFFECTNET MODEL EPOCHS [THREADS]}
EPOCHS=${4:?usage: default_model_finetune.sh FER2013 AFFECTNET MODEL EPOCHS [THREADS]}
THREADS=${5:-2}
HERE=$(dirname "$0")
SHORT=${MODEL#vgg_fer_}
START=runs/warm/$SHORT.pt
SOURCE=${SOURCE:-$HERE/../src/ferkit/weights/default.onnx}
if [ ! -f "$START" ]; then
  if [ "$MODEL" = vgg_fer_w32 ]; then PRUNE=(); else PRUNE=(--prune "$MODEL"); fi
  python "$HERE/warm_start.py" "$SOURCE" --data "$DATA" -o "$START" "${PRUNE[@]}"
fi
TRAIN_EXTRA="model=$MODEL finetune_from=$START lr=0.01" \
  bash "$HERE/default_model_train.sh" "$DATA" "$AUX" "runs/ft-$SHORT" "$EPOCHS" "$THREADS"
