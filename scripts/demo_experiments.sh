#!/usr/bin/env bash
# The demo experiments of EXPERIMENTS.md: imbalance remedies, colour swap, label groups.
#
#   scripts/demo_experiments.sh
#
# Every configuration trains all folds with scripts/cv.sh (3 folds, so that the rare
# tags' out-of-fold scores pool every training image), the same model, image size and
# epoch budget (3 epochs at 64 px). Rerunning continues where it stopped. Results: tools/statistics.py and
# stack.py over $RUNS (commands printed at the end).
#
# Environment: DATA (default data/demo), RUNS (default runs/demo-exp), FOLDS (3),
# ARCH (tf_efficientnet_lite0), BS (32), TTA (none).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DATA="$(realpath -m "${DATA:-$REPO/data/demo}")"
export RUNS="$(realpath -m "${RUNS:-$REPO/runs/demo-exp}")"
export FOLDS="${FOLDS:-3}"
export TTA="${TTA:-none}"
ARCH="${ARCH:-tf_efficientnet_lite0}"
BS="${BS:-32}"
[ -f "$DATA/train.csv" ] || python "$REPO/tools/make_demo.py" --out "$DATA"
# --aug default: train.py's default --aug when these rows were measured (a row's own --aug wins)
common=(--size 64 --epochs 3 --folds-file "$DATA/folds$FOLDS.csv" --plots last --aug default)

TAG=bce         "$REPO/scripts/cv.sh" "$ARCH" "$BS" "${common[@]}" --loss bce
TAG=wbce        "$REPO/scripts/cv.sh" "$ARCH" "$BS" "${common[@]}" --loss wbce
TAG=asl         "$REPO/scripts/cv.sh" "$ARCH" "$BS" "${common[@]}" --loss asl
TAG=oversample  "$REPO/scripts/cv.sh" "$ARCH" "$BS" "${common[@]}" --loss bce --sampler oversample
TAG=colorswap   "$REPO/scripts/cv.sh" "$ARCH" "$BS" "${common[@]}" --loss bce --aug 'default;colorswap:perm'
for i in 0 1 2; do
  TAG=group$i   "$REPO/scripts/cv.sh" "$ARCH" "$BS" "${common[@]}" --loss bce --label-group "auto:3/$i"
done
echo "python tools/statistics.py --runs '$RUNS' --level model --md $RUNS/leaderboard.md"
