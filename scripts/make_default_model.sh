#!/usr/bin/env bash
# Build ferkit's bundled default model from a finished training run, with ferkit's own commands.
# Everything it measures lands in outputs/default/ and is copied into docs/MODEL_CARD.md.
#   bash scripts/make_default_model.sh runs/w32 ../shared/data/fer2013 mirror
set -euo pipefail
RUN=${1:-runs/w32}
DATA=${2:-../shared/data/fer2013}
TTA=${3:-mirror}          # test-time crops the app uses; chosen on PublicTest (see docs/MODEL_CARD.md)
OUT=outputs/default
mkdir -p "$OUT"
# 1. temperature and prior-correction offsets on PublicTest (validation), never PrivateTest
ferkit calibrate "$RUN/best.pt" --data "$DATA" --tta "$TTA" --prior-correction -o "$OUT/ferkit-default-w32.pt" | tee "$OUT/calibrate.txt"
# 2. one ONNX graph with normalisation, crops and temperature inside; parity-checked against PyTorch
ferkit export "$OUT/ferkit-default-w32.pt" -o "$OUT/default.onnx" --tta "$TTA" --data "$DATA" | tee "$OUT/export.txt"
# 3. the numbers: validation and the held-out report split (also without Training duplicates)
ferkit evaluate "$OUT/default.onnx" --data "$DATA" --split PublicTest -o "$OUT/public" | tee "$OUT/public.txt"
ferkit evaluate "$OUT/default.onnx" --data "$DATA" --split PrivateTest -o "$OUT/private" | tee "$OUT/private.txt"
# 4. ship it
python scripts/bundle_default_model.py "$OUT" "$RUN"
