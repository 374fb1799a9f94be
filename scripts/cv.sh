#!/usr/bin/env bash
# Train every fold of one configuration, then predict each run with TTA on val and test.
#
#   scripts/cv.sh ARCH BS [train.py arguments...]
#
# Rerunning after a crash or a reboot continues: finished folds are skipped,
# interrupted ones resume from their last checkpoint, missing predictions are made.
# A run of RUNS trained on another dataset (another train.csv or folds.csv) is refused.
# Run names are <arch>-<tag>-f<fold>, the tag being a hash of BS and the extra
# arguments but train.py's how-to-run ones (--amp, --workers, ...), so each
# configuration has its own runs.
#
# Environment (all optional):
#   DATA    dataset directory                     (default: data/demo in the repository)
#   RUNS    folder of runs                        (default: runs/ in the repository)
#   FOLDS   number of folds                       (default: K of DATA/folds.csv, else 5)
#   TTA     predict.py TTA variant                (default: 10crop, the test of the default
#           --aug's crops; evidence: EXPERIMENTS.md#d-which-augmentations-are-unnecessary)
#   TAG     name tag of this configuration        (default: hash of BS and arguments)
#   PYTHON  Python interpreter                    (default: python)
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARCH="$1"; BS="$2"; shift 2
DATA="$(realpath -m "${DATA:-$REPO/data/demo}")"
RUNS="$(realpath -m "${RUNS:-$REPO/runs}")"
if [ -z "${FOLDS:-}" ] && [ -f "$DATA/folds.csv" ]; then  # an existing folds file fixes K, as in train.py
  FOLDS="$(awk -F, 'NR > 1 && $NF + 0 >= k { k = $NF + 1 } END { print (k ? k : 5) }' "$DATA/folds.csv")"
fi
FOLDS="${FOLDS:-5}"
TTA="${TTA:-10crop}"
PYTHON="${PYTHON:-python}"
# the tag hashes the configuration: train.py's how-to-run flags (--amp, --workers, ...; its flag
# table's) are left out, so a rerun that changes only them finds the same runs; a run named by the
# former tag of every argument, before this rule, is kept
FORMER_TAG="$([ -n "${TAG:-}" ] || printf '%s ' "$BS" "$@" | sha1sum | cut -c1-8)"
# shellcheck disable=SC2016
TAG="${TAG:-$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); from utils.runs.train_flags import configuration_argv
sys.stdout.write("".join(a + " " for a in sys.argv[2:3] + configuration_argv(sys.argv[3:])))' "$REPO" "$BS" "$@" \
  | sha1sum | cut -c1-8)}"
SAFE_ARCH="${ARCH//:/_}"
names=()

for ((fold = 0; fold < FOLDS; fold++)); do
  name="$SAFE_ARCH-$TAG-f$fold"
  if [ -n "$FORMER_TAG" ] && [ ! -e "$RUNS/$name" ] && [ -e "$RUNS/$SAFE_ARCH-$FORMER_TAG-f$fold" ]; then
    name="$SAFE_ARCH-$FORMER_TAG-f$fold"
  fi
  names+=("$name")
  run="$RUNS/$name"
  common=(--data "$DATA" --out "$RUNS" --arch "$ARCH" --bs "$BS" --fold "$fold" --folds-k "$FOLDS" --name "$name" "$@")
  # new, unfinished, finished or diverged; a run of RUNS trained on another dataset stops here (exit 2)
  state="$("$PYTHON" "$REPO/tools/run_status.py" --runs "$run" --data "$DATA" \
    --fix "give each dataset its own RUNS folder, or move the run away")"
  case "${state%% *}" in
    finished) echo "== $name: trained" ;;
    diverged) echo "== $name: diverged; change the arguments (e.g. a lower --lr: the runs get another TAG)" >&2
              exit 1 ;;
    unfinished) echo "== $name: resuming"
                "$PYTHON" "$REPO/train.py" "${common[@]}" --resume ;;
    *) echo "== $name: training"
       "$PYTHON" "$REPO/train.py" "${common[@]}" ;;
  esac
  if [ -f "$run/preds/val.$TTA.csv" ] && [ -f "$run/preds/test.$TTA.csv" ]; then
    echo "== $name: predicted with $TTA"
  else
    "$PYTHON" "$REPO/predict.py" --runs "$run" --tta "$TTA" --split both
  fi
done
echo "runs of $ARCH (bs $BS, tag $TAG):"
for name in "${names[@]}"; do echo "  $RUNS/$name"; done
