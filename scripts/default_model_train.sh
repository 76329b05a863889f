#!/usr/bin/env bash
# Issue 12, step 2: the shipped model's candidate at full length, with the mixing grid's choice
# (scripts/default_model_mix.sh, docs/RESULTS.md): vgg_fer_w16 (fast enough to outrun the `fer` package at
# one crop), FER2013 Training + AffectNet at aux_ratio 0.5 with a class-balanced AffectNet share (the best
# balanced accuracy on both validation sets), the world augmentation, AffectNet in FER2013's framing
# (aux_crop=0.8), the best epoch selected on the mean of PublicTest and the AffectNet held-out part.
# Resumable: rerun the same command; it continues from last.pt (commit last.pt between sessions).
#   bash scripts/default_model_train.sh ../shared/data/fer2013 ../shared/data/affectnet [runs/default-w16] [EPOCHS] [THREADS]
# CPU budget (2-core VM, measured in the mixing grid): ~43k images an epoch at ~290 images/s with 2 threads,
# about 2.5 minutes an epoch, so 60 epochs is about 2.5 CPU hours.
set -euo pipefail
DATA=${1:?usage: default_model_train.sh FER2013 AFFECTNET [OUT] [EPOCHS] [THREADS]}
AUX=${2:?usage: default_model_train.sh FER2013 AFFECTNET [OUT] [EPOCHS] [THREADS]}
OUT=${3:-runs/default-w16}
EPOCHS=${4:-60}
THREADS=${5:-2}
EXTRA=${TRAIN_EXTRA:-}  # more overrides, e.g. TRAIN_EXTRA="teacher=runs/teacher.pt" or "max_train_images=500"
WORLD="augment.contrast=0.4 augment.gamma=0.4 augment.blur=0.3 augment.jpeg=0.3 augment.noise_std=0.04
  augment.noise_prob=0.3 augment.crop_jitter=0.5"

if [ -f "$OUT/last.pt" ]; then
  ferkit train --resume -o "$OUT" --data "$DATA" epochs="$EPOCHS" threads="$THREADS" progress=false
else
  # shellcheck disable=SC2086  # WORLD and EXTRA are lists of key=value words
  ferkit train -c cpu --data "$DATA" -o "$OUT" model=vgg_fer_w16 epochs="$EPOCHS" threads="$THREADS" \
    progress=false aux_data="$AUX" aux_sampling=per_batch aux_ratio=0.5 aux_balance=sampler aux_crop=0.8 \
    select_on=mean $WORLD $EXTRA
fi
