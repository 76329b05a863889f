#!/usr/bin/env bash
# Build ferkit's bundled default model from finished training runs, with ferkit's own commands.
# Everything it measures lands in outputs/default/ and is copied into docs/MODEL_CARD.md.
#   bash scripts/make_default_model.sh runs/w32 ../shared/data/fer2013 center
#   bash scripts/make_default_model.sh runs/w32,runs/w32c2 ../shared/data/fer2013 center fp16   # an ensemble
set -euo pipefail
RUNS=${1:-runs/w32}       # one run, or several separated by commas (members of a mean-of-softmax ensemble)
DATA=${2:-../shared/data/fer2013}
TTA=${3:-center}          # test-time crops the app uses; chosen on PublicTest (see docs/MODEL_CARD.md)
PRECISION=${4:-fp32}      # fp32 | fp16 (half the file; keeps two w32 members under the 20 MB budget)
OUT=${OUT:-outputs/default}  # NO_BUNDLE=1 stops before copying into the package (a dry run)
mkdir -p "$OUT"
IFS=, read -ra RUN_LIST <<< "$RUNS"
# 1. each member: temperature and prior-correction offsets on PublicTest (validation), never PrivateTest
MEMBERS=()
: > "$OUT/calibrate.txt"
for RUN in "${RUN_LIST[@]}"; do
  NAME=$(basename "$RUN")
  ferkit calibrate "$RUN/best.pt" --data "$DATA" --tta "$TTA" --prior-correction -o "$OUT/member-$NAME.pt" | tee -a "$OUT/calibrate.txt"
  MEMBERS+=("$OUT/member-$NAME.pt")
done
MODEL=${MEMBERS[0]}
if [ "${#MEMBERS[@]}" -gt 1 ]; then
  ferkit ensemble build --member "${MEMBERS[@]}" --combine prob -o "$OUT/ensemble.pt"
  MODEL=$OUT/ensemble.pt
fi
# 2. one ONNX graph with normalisation, crops, temperatures and the combination inside; parity-checked
EXTRA=()
[ "$PRECISION" = fp16 ] && EXTRA=(--fp16)
ferkit export "$MODEL" -o "$OUT/default.onnx" --tta "$TTA" --data "$DATA" "${EXTRA[@]}" | tee "$OUT/export.txt"
# 3. the numbers: validation and the held-out report split (also without Training duplicates)
ferkit evaluate "$OUT/default.onnx" --data "$DATA" --split PublicTest -o "$OUT/public" | tee "$OUT/public.txt"
ferkit evaluate "$OUT/default.onnx" --data "$DATA" --split PrivateTest -o "$OUT/private" | tee "$OUT/private.txt"
# 4. ship it
[ "${NO_BUNDLE:-0}" = 1 ] || python scripts/bundle_default_model.py "$OUT" "${RUN_LIST[@]}"
