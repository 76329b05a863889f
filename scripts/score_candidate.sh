#!/usr/bin/env bash
# Issue 12: a default-model candidate scored on both validation sets, never on PrivateTest: calibrated on
# PublicTest as make_default_model.sh would (temperature and prior correction, centre crop), exported in
# fp32 and static int8, then PublicTest and the AffectNet held-out part (as is and at crop 0.8) for each.
# Records (the ferkit commands' printed reports) land in OUT; the graphs in outputs/NAME/.
#   bash scripts/score_candidate.sh runs/ft-w24 ../shared/data/fer2013 ../shared/data/affectnet \
#       docs/default_model_candidates/w24
set -euo pipefail
RUN=${1:?usage: score_candidate.sh RUN FER2013 AFFECTNET OUT}
DATA=${2:?usage: score_candidate.sh RUN FER2013 AFFECTNET OUT}
AUX=${3:?usage: score_candidate.sh RUN FER2013 AFFECTNET OUT}
OUT=${4:?usage: score_candidate.sh RUN FER2013 AFFECTNET OUT}
NAME=$(basename "$OUT")
GRAPHS=outputs/$NAME
mkdir -p "$OUT" "$GRAPHS"
cp "$RUN/config.yaml" "$RUN/metrics.jsonl" "$OUT/"
ferkit calibrate "$RUN/best.pt" --data "$DATA" --tta center --prior-correction -o "$GRAPHS/member.pt" \
  | tee "$OUT/calibrate.txt"
ferkit export "$GRAPHS/member.pt" -o "$GRAPHS/$NAME.onnx" --tta center --data "$DATA"
ferkit export "$GRAPHS/member.pt" -o "$GRAPHS/$NAME-int8.onnx" --tta center --data "$DATA" --int8 static
for P in "" int8-; do
  G=$GRAPHS/$NAME${P:+-int8}.onnx
  ferkit evaluate "$G" --data "$DATA" --split PublicTest > "$OUT/${P}public.txt"
  ferkit evaluate "$G" --data "$AUX" --split heldout > "$OUT/${P}aux.txt"
  ferkit evaluate "$G" --data "$AUX" --split heldout --crop 0.8 > "$OUT/${P}aux-crop.txt"
done
grep -h -E "^(PublicTest|heldout) " "$OUT"/{public,aux,aux-crop,int8-public,int8-aux,int8-aux-crop}.txt
