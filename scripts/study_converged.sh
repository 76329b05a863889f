#!/usr/bin/env bash
# The study's headline rows to convergence under its own (LEAKY) protocol and the official one, then the
# side-by-side table and curves in docs/LEAKAGE.md and docs/RESULTS.md (issue 15). Resumable: rerun the
# same command after an interruption; finished cells are kept, an unfinished one resumes from its last.pt.
#   bash scripts/study_converged.sh ../shared/data/fer2013 [runs/study-converged] [cpu|full]
# CPU budget (measured 2026-12-02, 2-core VM, vgg_fer_w16 at 230-570 images/s in the loop): about 5 hours
# (tuned <= 30 epochs of 28,709 images; eight balanced cells, the no-augmentation probe's two included,
# <= 10 epochs of ~50k each; see the grid file).
set -euo pipefail
DATA=${1:?usage: study_converged.sh FER2013_DATA [OUT] [BUDGET]}
OUT=${2:-runs/study-converged}
BUDGET=${3:-cpu}
ferkit experiment run study-converged --data "$DATA" --budget "$BUDGET" --out "$OUT"
ferkit experiment leakage-report "$OUT" --docs docs --command "bash scripts/study_converged.sh $DATA $OUT $BUDGET"
