#!/usr/bin/env bash
# The study's ensemble (ROS + SMOTE + SMOTE-Tomek members, softmax averaged) at a CPU budget, official
# protocol: each member fine-tunes the default model's run (runs/w32) for 2 epochs on the resampled
# Training split (resampling touches Training only), selected on PublicTest; reported on PrivateTest.
#   bash scripts/study_ensemble_cpu.sh ../shared/data/fer2013
set -euo pipefail
DATA=${1:-../shared/data/fer2013}
for b in ros smote smote_tomek; do
  [ -f "runs/ft_$b/best.pt" ] || ferkit train -c cpu --data "$DATA" --out "runs/ft_$b" balance=$b \
      finetune_from=runs/w32/best.pt epochs=2 lr=0.002 warmup_epochs=0 progress=false
done
ferkit ensemble build --member runs/ft_ros/best.pt --member runs/ft_smote/best.pt \
    --member runs/ft_smote_tomek/best.pt -o runs/study_ensemble.pt
ferkit evaluate runs/study_ensemble.pt --data "$DATA" --split PrivateTest --tta center -o outputs/study_ensemble
