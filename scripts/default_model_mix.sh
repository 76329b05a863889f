#!/usr/bin/env bash
# Issue 12, step 1: how much AffectNet to mix into FER2013 training, and whether to balance its share, chosen
# on the two validation sets (FER2013 PublicTest and the fixed AffectNet held-out part; never PrivateTest).
# Five cells: aux_ratio 0 / 0.25 / 0.5 auxiliary images per FER2013 image in every batch, AffectNet's share
# drawn as it comes (none) or class-balanced (sampler); all with the world augmentation (contrast, gamma,
# blur, JPEG, noise, detector-like crop jitter) and AffectNet in FER2013's framing (aux_crop=0.8, measured:
# docs/RESULTS.md). The best epoch of each cell is selected on the mean of the two sets' accuracy.
# Resumable: rerun the same command; an interrupted cell continues from its last.pt.
#   bash scripts/default_model_mix.sh ../shared/data/fer2013 ../shared/data/affectnet [runs/mix] [MODEL] [EPOCHS]
# CPU budget (planned, not yet measured with the mix): vgg_fer_w16 at ~290 images/s in the loop, an epoch is
# one pass over FER2013 Training plus its auxiliary share (28,709 x (1 + ratio) images): about 1.7 / 2.1 /
# 2.5 minutes at ratio 0 / 0.25 / 0.5, so 8 epochs a cell is about 90 minutes for the five cells.
set -euo pipefail
DATA=${1:?usage: default_model_mix.sh FER2013 AFFECTNET [OUT] [MODEL] [EPOCHS]}
AUX=${2:?usage: default_model_mix.sh FER2013 AFFECTNET [OUT] [MODEL] [EPOCHS]}
OUT=${3:-runs/mix}
MODEL=${4:-vgg_fer_w16}
EPOCHS=${5:-8}
EXTRA=${MIX_EXTRA:-}  # more overrides for every cell, e.g. MIX_EXTRA="max_train_images=500" for a trial
WORLD="augment.contrast=0.4 augment.gamma=0.4 augment.blur=0.3 augment.jpeg=0.3 augment.noise_std=0.04
  augment.noise_prob=0.3 augment.crop_jitter=0.5"

CELLS="r0_none r0.25_none r0.25_sampler r0.5_none r0.5_sampler"
for cell in $CELLS; do
  ratio=${cell#r}; ratio=${ratio%_*}; balance=${cell##*_}
  run="$OUT/$cell"
  if [ -f "$run/last.pt" ]; then
    ferkit train --resume -o "$run" --data "$DATA" epochs="$EPOCHS" progress=false
  else
    # shellcheck disable=SC2086  # WORLD and EXTRA are lists of key=value words
    ferkit train -c cpu --data "$DATA" -o "$run" model="$MODEL" epochs="$EPOCHS" threads=2 progress=false \
      aux_data="$AUX" aux_sampling=per_batch aux_ratio="$ratio" aux_balance="$balance" aux_crop=0.8 \
      select_on=mean $WORLD $EXTRA
  fi
done

# shellcheck disable=SC2086  # one argument per cell
python - "$OUT" $CELLS <<'EOF'
"""The cells side by side at their selected epochs (fit's own rule), best first."""
import json
import sys
from pathlib import Path

from ferkit.training.loop import best_epoch

rows = []
for run in (Path(sys.argv[1]) / name for name in sys.argv[2:]):
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    best = best_epoch([json.loads(line) for line in lines if line.strip()])
    if best:
        rows.append((best["select_acc"], run.name, best, len(lines)))
print("| cell | epoch (of) | PublicTest top-1 / balanced | AffectNet held-out top-1 / balanced | mean |")
print("|---|---|---|---|---|")
for score, name, b, n in sorted(rows, key=lambda r: r[0], reverse=True):
    print(
        f"| {name} | {b['epoch']} ({n}) | {100 * b['val_acc']:.2f} / {100 * b['val_balanced_acc']:.2f} | "
        f"{100 * b['aux_val_acc']:.2f} / {100 * b['aux_val_balanced_acc']:.2f} | {100 * score:.2f} |"
    )
EOF
