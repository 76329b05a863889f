#!/usr/bin/env bash
# Build ferkit's bundled default model from finished training runs, with ferkit's own commands.
# Everything it measures lands in outputs/default/ and is copied into docs/MODEL_CARD.md.
#   bash scripts/make_default_model.sh runs/w32 ../shared/data/fer2013 center
#   bash scripts/make_default_model.sh runs/w32,runs/w32c2 ../shared/data/fer2013 center fp16   # an ensemble
#   bash scripts/make_default_model.sh runs/w16 ../shared/data/fer2013 center int8   # ship static int8
# Optional, by environment:
#   AUX=../shared/data/affectnet   also score the AffectNet held-out part (aux/), and in FER2013's framing
#                                  (aux-crop/: the central AUX_CROP of each face, default 0.8)
#   INT8=1                         the card's int8-versus-fp32 accuracy: a copy in the other precision
#                                  scored on the same sets: static int8 (default-int8.onnx, int8-public/,
#                                  int8-private/, int8-aux/, int8-aux-crop/), or fp32 when the shipped
#                                  graph is int8 (default-fp32.onnx, fp32-public/, ...)
#   AUX=../shared/data/affectnet INT8=1 bash scripts/make_default_model.sh runs/w16 ../shared/data/fer2013 center
set -euo pipefail
RUNS=${1:-runs/w32}       # one run, or several separated by commas (members of a mean-of-softmax ensemble)
DATA=${2:-../shared/data/fer2013}
TTA=${3:-center}          # test-time crops the app uses; chosen on PublicTest (see docs/MODEL_CARD.md)
PRECISION=${4:-fp32}      # fp32 | fp16 (half the file; keeps two w32 members under the 20 MB budget) | int8
                          # (static, calibrated on 512 Training faces: a quarter of the file, faster on CPU)
OUT=${OUT:-outputs/default}  # NO_BUNDLE=1 stops before copying into the package (a dry run)
AUX=${AUX:-}
INT8=${INT8:-0}
case "$PRECISION" in
  fp32) EXTRA=() ;;
  fp16) EXTRA=(--fp16) ;;
  int8) EXTRA=(--int8 static) ;;
  *) echo "PRECISION must be fp32, fp16 or int8, not $PRECISION" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
# the optional sets of an earlier build must not reach this build's card
rm -rf "$OUT/aux" "$OUT/aux-crop" "$OUT"/int8-* "$OUT"/fp32-* "$OUT"/aux*.txt "$OUT"/default-{int8,fp32}.onnx \
  "$OUT"/export-{int8,fp32}.txt
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
ferkit export "$MODEL" -o "$OUT/default.onnx" --tta "$TTA" --data "$DATA" "${EXTRA[@]}" | tee "$OUT/export.txt"
# 3. the numbers: validation and the held-out report split (also without Training duplicates), and with AUX
#    the AffectNet held-out part (never trained on with aux_sampling=per_batch), as is and cropped
score() {  # score GRAPH PREFIX: writes $OUT/{PREFIX}public, {PREFIX}private, {PREFIX}aux, {PREFIX}aux-crop
  local graph=$1 p=$2
  ferkit evaluate "$graph" --data "$DATA" --split PublicTest -o "$OUT/${p}public" | tee "$OUT/${p}public.txt"
  ferkit evaluate "$graph" --data "$DATA" --split PrivateTest -o "$OUT/${p}private" | tee "$OUT/${p}private.txt"
  [ -n "$AUX" ] || return 0
  ferkit evaluate "$graph" --data "$AUX" --split heldout -o "$OUT/${p}aux" | tee "$OUT/${p}aux.txt"
  ferkit evaluate "$graph" --data "$AUX" --split heldout --crop "${AUX_CROP:-0.8}" -o "$OUT/${p}aux-crop" \
    | tee "$OUT/${p}aux-crop.txt"
}
score "$OUT/default.onnx" ""
# 3b. with INT8=1, a copy in the other precision measured the same way (the shipped graph stays $PRECISION):
#     static int8 beside an fp32 or fp16 graph, fp32 beside an int8 one
if [ "$INT8" = 1 ]; then
  if [ "$PRECISION" = int8 ]; then OTHER=fp32 OTHER_ARGS=(); else OTHER=int8 OTHER_ARGS=(--int8 static); fi
  ferkit export "$MODEL" -o "$OUT/default-$OTHER.onnx" --tta "$TTA" --data "$DATA" "${OTHER_ARGS[@]}" \
    | tee "$OUT/export-$OTHER.txt"
  score "$OUT/default-$OTHER.onnx" "$OTHER-"
fi
# 4. ship it
[ "${NO_BUNDLE:-0}" = 1 ] || python scripts/bundle_default_model.py "$OUT" "${RUN_LIST[@]}"
