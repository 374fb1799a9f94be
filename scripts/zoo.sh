#!/usr/bin/env bash
# Train every fold of several architectures with scripts/cv.sh, then stack them all.
#
#   scripts/zoo.sh [train.py arguments...]
#
# Ends with $OUT/submission.csv and the stack report beside it (RUNS/stack/ by default, as
# tools/submit.py; README "Where outputs go"), and says where. Rerunning continues.
#
# Environment (all optional; DATA, RUNS, FOLDS, TTA, PYTHON as in cv.sh):
#   ARCHS   architectures                 (default: "tf_efficientnet_lite0 resnet18")
#   BS      batch size for every arch     (default: 32)
#   OUT     folder for the submission and the stack report  (default: RUNS/stack)
#   METHOD  stack.py --method             (default: all, the best by cross-fitted F2 is used)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DATA="$(realpath -m "${DATA:-$REPO/data/demo}")"
export RUNS="$(realpath -m "${RUNS:-$REPO/runs}")"
export TTA="${TTA:-10crop}"  # as cv.sh
PYTHON="${PYTHON:-python}"
ARCHS="${ARCHS:-tf_efficientnet_lite0 resnet18}"
BS="${BS:-32}"
OUT="$(realpath -m "${OUT:-$RUNS/stack}")"
for arch in $ARCHS; do
  "$REPO/scripts/cv.sh" "$arch" "$BS" "$@"
done
method=()
[ -n "${METHOD:-}" ] && method=(--method "$METHOD")
"$PYTHON" "$REPO/stack.py" --runs "$RUNS/*" --tta "$TTA" --out "$OUT/submission.csv" --report-dir "$OUT" \
  "${method[@]}"
echo "submission: $OUT/submission.csv (stack report beside it: $OUT/stack_report.md)"
