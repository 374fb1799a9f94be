#!/usr/bin/env bash
# The notes' open questions on a small CPU budget: every row of every section of
# EXPERIMENTS.md "Open questions from the notes", all folds, resumable.
#
#   scripts/notes_experiments.sh                      train every row (order: PRIORITY), then predict
#   scripts/notes_experiments.sh ROW ...              train these rows (names as in the sections below)
#   scripts/notes_experiments.sh --table SECTION ...  print the sections' tables
#     (tables: a b b-fixres b-fixres48 c d d-10crop e f x-strong r r-avg o oa; none given: all)
#
# Sections: a batch size and BatchNorm, b image size per stage and FixRes, c unfreezing,
# d which augmentations, e batch-size ramp vs lr decay, f static vs dynamic augmentation,
# x extra rows (c without discriminative lrs, f with one static copy, the strong preset minus one op),
# r the training ingredients (EMA, erase, RandAugment, mixup, cutmix, heads, accumulation, the strong recipe)
# one at a time on top of base (rows r-strong r-ema ... r-accum2 r-avg3; a full run trains them last),
# o optimizers (AdamW, Lion, schedule-free AdamW) and layer-wise lr decay vs lr_mult (rows o-*;
# rows oa-* are the same on a plan sized for the apparel photos, DATA=.../apparel: a full run skips them).
# Every row is tf_efficientnet_lite0 (ImageNet weights), 5 epochs (equal images seen),
# the same folds (DATA/folds.csv, made once). The AdamW rows run the default recipe's
# shape at 10x its learning rates (--lr 3e-3: head 1e-2, body 3e-3): at the default 3e-4,
# the ~60 updates this budget allows leave the model at the label-frequency prior. A finished run (result.json) is skipped,
# an interrupted one resumes with train.py --resume. A run that another copy of this
# script is training (its lock is held) is left to that copy, so two copies share the work.
#
# Environment (all optional):
#   DATA    dataset (default: data/mosaic; make it with
#           tools/make_mosaic.py --npz fashion_mnist.npz --out data/mosaic --size 64 --n-train 600 --n-test 10)
#   RUNS    folder of runs      (default: runs/notes)
#   FOLDS   number of folds of the split (default: 3)
#   TRAIN_FOLDS  folds trained per row, 0..N-1 (default: FOLDS; 2 on a small budget:
#           tables then compare every row on the same folds 0 and 1)
#   SEED    training seed       (default: 0; give each seed its own RUNS, e.g. SEED=1 RUNS=runs/notes-seed1,
#           and compare a row's per-fold gains seed by seed)
#   PYTHON  interpreter         (default: python)
set -uo pipefail
usage() { sed -n '2,/^set -uo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$(realpath -m "${DATA:-$REPO/data/mosaic}")"
RUNS="$(realpath -m "${RUNS:-$REPO/runs/notes}")"
FOLDS="${FOLDS:-3}"
TRAIN_FOLDS="${TRAIN_FOLDS:-$FOLDS}"
PYTHON="${PYTHON:-python}"
SEED="${SEED:-0}"
FAILED=0

# the default recipe (finetune) written out, so that keys it lacks can be added to it
HEAD="name=head,epochs=1,size=32,bs=32,lr=1e-2,train=head,opt=adamw,wd=0.01,sched=onecycle,pct_start=0.3"
FT="$HEAD;name=all,epochs=4,size=48,lr=3e-3,train=all,lr_mult=0.5"
ALL="name=all,epochs=5,size=48,bs=32,lr=3e-3,train=all,opt=adamw,wd=0.01,sched=onecycle,pct_start=0.3"
GRAD="$HEAD;name=last1,epochs=1,size=48,lr=3e-3,train=1,lr_mult=0.5;name=last2,train=2;name=last3,train=3;name=all,train=all"
SGD="size=48,opt=sgd,momentum=0.9,wd=1e-4,sched=const,train=all"

# row NAME train.py-arguments...: register a configuration (the sections below), once
declare -A ROW_ARGS=()
ORDER=()
row() {
  local tag="$1"; shift
  [ -n "${ROW_ARGS[$tag]+x}" ] && return 0
  ROW_ARGS[$tag]="$(printf '%q ' "$@")"
  ORDER+=("$tag")
}

# train NAME: train every fold of a registered row
train() {
  local tag="$1" fold name run
  [ -n "${ROW_ARGS[$tag]+x}" ] || { echo "unknown row $tag" >&2; return 2; }
  eval "set -- ${ROW_ARGS[$tag]}"
  for ((fold = 0; fold < TRAIN_FOLDS; fold++)); do
    name="$tag-f$fold"; run="$RUNS/$name"
    [ -f "$run/result.json" ] && { echo "== $name: trained"; continue; }
    (
      flock -n 9 || { echo "== $name: another copy is training it"; exit 0; }
      # --aug default: train.py's default --aug when these rows were measured (a row's own --aug wins)
      common=(--data "$DATA" --out "$RUNS" --folds-k "$FOLDS" --fold "$fold" --name "$name" --plots none --workers 0 --seed "$SEED" --aug default "$@")
      if [ -f "$run/checkpoints/last.pt" ]; then
        echo "== $name: resuming"; "$PYTHON" "$REPO/train.py" "${common[@]}" --resume
      else
        echo "== $name: training"; "$PYTHON" "$REPO/train.py" "${common[@]}"
      fi
    ) 9>"$RUNS/.$name.lock" || {
      FAILED=$((FAILED + 1))
      if [ -f "$run/checkpoints/last.pt" ]; then echo "== $name: FAILED (see above; a rerun resumes it)"
      else echo "== $name: FAILED (see above)"; fi
    }
  done
}

# predicted NAME TTA [predict.py arguments...]: validation predictions of every fold of a row
predicted() {
  local tag="$1" tta="$2"; shift 2
  local fold run suffix=""
  for a in "$@"; do [[ "$a" =~ ^[0-9]+$ ]] && suffix="-${a}px"; done
  for ((fold = 0; fold < TRAIN_FOLDS; fold++)); do
    run="$RUNS/$tag-f$fold"
    [ -f "$run/result.json" ] || continue  # not trained (yet): nothing to predict
    [ -f "$run/preds/val.$tta$suffix.csv" ] && continue
    "$PYTHON" "$REPO/predict.py" --runs "$run" --tta "$tta" --split val "$@" ||
      { FAILED=$((FAILED + 1)); echo "== $tag-f$fold: predict FAILED"; }
  done
}

section_a() {  # batch size, linear lr scaling, BatchNorm statistics
  row base --epochs 5 --size 48 --bs 32 --lr 3e-3
  row bs16 --epochs 5 --size 48 --bs 16 --lr 1.5e-3      # lr scaled with the batch
  row bs64 --epochs 5 --size 48 --bs 64 --lr 6e-3
  row bs16-lr --epochs 5 --size 48 --bs 16 --lr 3e-3      # lr fixed
  row bs64-lr --epochs 5 --size 48 --bs 64 --lr 3e-3
  row bs16-bnfrozen --stages "$FT,bn=frozen" --bs 16 --lr 1.5e-3
}
section_b() {  # image size per stage, equal images seen; FixRes (test larger than train)
  row base --epochs 5 --size 48 --bs 32 --lr 3e-3
  row size32 --epochs 5 --size 32 --bs 32 --lr 3e-3
  row size64 --stages "${HEAD/size=32/size=64};name=all,epochs=4,size=64,lr=3e-3,train=all,lr_mult=0.5"
  row progressive --stages "$HEAD;name=s32,epochs=1,size=32,lr=3e-3,train=all,lr_mult=0.5;name=s48,size=48;name=s64,epochs=2,size=64"
}
section_c() {  # gradual unfreezing vs all at once vs head-then-all; discriminative lrs
  row base --epochs 5 --size 48 --bs 32 --lr 3e-3
  row ft-mult1 --stages "${FT/lr_mult=0.5/lr_mult=1}"
  row gradual --recipe unfreeze-gradual --epochs 5 --size 48 --bs 32 --lr 3e-3
  row all --stages "$ALL,lr_mult=0.5"
}
section_d() {  # which augmentations are needed
  row base --epochs 5 --size 48 --bs 32 --lr 3e-3
  row aug-none --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug none
  row no-hflip --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug 'rotate:10;shift:0.0625;crop:0.125'
  row no-rotate --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug 'hflip;shift:0.0625;crop:0.125'
  row no-shift --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug 'hflip;rotate:10;crop:0.125'
  row no-crop --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug 'hflip;rotate:10;shift:0.0625'
  row alexnet-aug --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug 'hflip;crop:0.125'
  row pca --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug 'default;pca:0.1'
}
section_e() {  # increasing the batch instead of decaying the lr (Smith et al. 2018)
  row base --epochs 5 --size 48 --bs 32 --lr 3e-3
  row bs-ramp --recipe bs-ramp --epochs 5 --size 48 --bs 64
  row lr-decay --stages "name=d1,epochs=2,bs=16,lr=0.00625,$SGD;name=d2,epochs=2,lr=0.003125;name=d3,epochs=1,lr=0.0015625"
}
section_f() {  # static (pre-generated) vs dynamic (every epoch) augmentation
  row base --epochs 5 --size 48 --bs 32 --lr 3e-3
  row static2 --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug-static 2
}
section_x() {  # extra rows, when time allows
  row gradual-mult1 --stages "${GRAD/lr_mult=0.5/lr_mult=1}"
  row all-mult1 --stages "$ALL,lr_mult=1"
  row static1 --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug-static 1   # one copy, seen every epoch (K >= epochs per stage reproduces dynamic exactly)
  row strong --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug strong
  row strong-no-hflip --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug "erase:1;randaug:2,m=9"
  row strong-no-erase --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug "hflip;randaug:2,m=9"
  row strong-no-randaug --epochs 5 --size 48 --bs 32 --lr 3e-3 --aug 'hflip;erase:1'
}

section_r() {  # the training ingredients, each alone on top of base, then the strong recipe
  local b=(--epochs 5 --size 48 --bs 32 --lr 3e-3)
  row base "${b[@]}"
  # the strong recipe at this budget: its plan (one stage, everything trained, Adam) at base's
  # lr, size, batch and epochs (at its 1e-4 ~60 updates learn nothing); EMA decay as r-ema
  # --loss asl --aug strong: the recipe's defaults when these rows were measured (now bce, 'hflip;erase:1')
  row r-strong --recipe strong "${b[@]}" --ema 0.99 --loss asl --aug strong
  row r-strong-bce --recipe strong "${b[@]}" --ema 0.99 --loss bce --aug strong    # which of its parts costs
  row r-strong-nomix --recipe strong "${b[@]}" --ema 0.99 --mix none --loss asl --aug strong
  # ~65 updates: 0.9997 would average over ~3000; with the warm-up min(d, (1+k)/(10+k)) the
  # decay reaches only 0.87 by the last update whatever d >= 0.87 is, so 0.99 and 0.9997 are alike
  row r-ema "${b[@]}" --ema 0.99
  row r-erase "${b[@]}" --aug 'default;erase:1'
  row r-erase-quarter "${b[@]}" --aug "default;erase:1,side=0.25"   # boxes of at most a quarter side
  row r-randaug "${b[@]}" --aug "default;randaug:2,m=9"
  row r-mixup "${b[@]}" --mix mixup:0.1
  row r-cutmix "${b[@]}" --mix cutmix:1.0
  row r-avgmax "${b[@]}" --head avgmax
  row r-gem "${b[@]}" --head gem
  row r-csra "${b[@]}" --head csra
  row r-accum2 "${b[@]}" --accum 2    # same images seen, half the updates
  # checkpoint averaging: base's training (deterministic, so the same weights) keeping the
  # last 3 epochs; predictions() replaces its validation predictions by their average's
  row r-avg3 "${b[@]}" --keep-epochs 3
}
section_o() {  # optimizers and layer-wise lr decay on the default recipe's plan (FT); oa-*: the same
  # rows on a plan that keeps a run on the apparel photos (1,300 training images a fold) under
  # a minute on one core: 1 epoch of the head, then 2 of everything, 32 px throughout
  optimizer_rows o "$FT" 1.2
  optimizer_rows oa "${FT/epochs=4,size=48/epochs=2,size=32}" 0.6
}
# optimizer_rows PREFIX PLAN WARMUP: section o's rows on PLAN (head stage, then all); WARMUP is
# 30% of the second stage's epochs, the one-cycle's rise, for the schedule-free rows
optimizer_rows() {
  local p="$1" plan="$2" warm="$3"
  row "$p-base" --stages "$plan"                               # AdamW, lr_mult 0.5 per layer group: the baseline
  row "$p-mult1" --stages "${plan/lr_mult=0.5/lr_mult=1}"       # neither: one lr for every layer
  row "$p-ld65" --stages "$plan,layer_decay=0.65"              # layer-wise lr decay in place of lr_mult
  row "$p-ld80" --stages "$plan,layer_decay=0.8"
  # Lion (Chen et al. 2023): lrs ~3x smaller than AdamW's (head 3e-3, body 1e-3), weight decay 3x larger
  local lion="${plan/opt=adamw,wd=0.01/opt=lion,wd=0.03}"
  lion="${lion/lr=1e-2/lr=3e-3}"
  row "$p-lion" --stages "${lion/lr=3e-3,train=all/lr=1e-3,train=all}"
  # schedule-free AdamW (its README: AdamW's lr to 10x it, a warm-up, no schedule): AdamW's
  # lrs, constant after a linear warm-up over the one-cycle's rise (30% of each stage)
  local sf="${plan/opt=adamw/opt=schedulefree_adamw}"
  sf="${sf/sched=onecycle,pct_start=0.3/sched=const,warmup=0.3}"
  row "$p-sfadamw" --stages "${sf/train=all,/train=all,warmup=$warm,}"
}
RECIPE_ROWS="r-strong r-ema r-erase r-randaug r-mixup r-cutmix r-avgmax r-gem r-csra r-accum2 r-avg3 r-erase-quarter r-strong-bce r-strong-nomix"

# averaged NAME K: a row's validation predictions from the uniform average of its last K
# kept epochs (tools/average_checkpoints.py, predict.py --checkpoint avg), once
averaged() {
  local tag="$1" k="$2" fold run
  for ((fold = 0; fold < TRAIN_FOLDS; fold++)); do
    run="$RUNS/$tag-f$fold"
    [ -f "$run/result.json" ] || continue
    [ -f "$run/checkpoints/avg.pt" ] && [ "$run/preds/val.none-avg.csv" -nt "$run/checkpoints/avg.pt" ] && continue
    { "$PYTHON" "$REPO/tools/average_checkpoints.py" --runs "$run" --last "$k" &&
      "$PYTHON" "$REPO/predict.py" --runs "$run" --checkpoint avg --tta none --split val; } ||
      { FAILED=$((FAILED + 1)); echo "== $tag-f$fold: averaging FAILED"; }
  done
}

predictions() {  # FixRes (b) and the AlexNet/ResNet 10-crop test (d): predictions only
  predicted base none --size 64
  predicted size32 none --size 48
  predicted size32 none --size 64
  predicted alexnet-aug 10crop
  predicted base 10crop
  averaged r-avg3 3
}
for s in a b c d e f x r o; do "section_$s"; done  # registers every row
# what a small budget trains first: one or two rows of every section, then the rest
PRIORITY="base aug-none bs16 gradual size32 static2 bs-ramp lr-decay bs16-bnfrozen all progressive
  alexnet-aug pca bs64 size64 no-rotate no-shift no-crop no-hflip bs16-lr ft-mult1 bs64-lr"

# table SECTION: the section's rows, scored by scripts/summarise_runs.py
table() {
  local rows tta=none
  case "$1" in
    a) rows="base bs16 bs64 bs16-lr bs64-lr bs16-bnfrozen" ;;
    b) rows="base size32 size64 progressive" ;;
    b-fixres) rows="base size32"; tta=none-64px ;;  # tested at 64 px
    b-fixres48) rows="size32"; tta=none-48px ;;
    c) rows="base ft-mult1 gradual gradual-mult1 all all-mult1" ;;
    d) rows="base aug-none no-hflip no-rotate no-shift no-crop alexnet-aug pca" ;;
    d-10crop) rows="base alexnet-aug"; tta=10crop ;;
    e) rows="base bs-ramp lr-decay" ;;
    f) rows="base static1 static2" ;;
    x-strong) rows="base strong strong-no-hflip strong-no-erase strong-no-randaug" ;;
    r) rows="base ${RECIPE_ROWS/r-avg3/}" ;;  # r-avg3 trains the same model as base: its row is r-avg
    r-avg) rows="r-avg3"; tta=none-avg ;;  # the averaged weights' predictions (preds/val.none-avg.csv)
    o) rows="o-base o-mult1 o-ld65 o-ld80 o-lion o-sfadamw" ;;
    oa) rows="oa-base oa-mult1 oa-ld65 oa-ld80 oa-lion oa-sfadamw" ;;  # the apparel plan's rows
    *) return 2 ;;
  esac
  [ -n "${2:-}" ] && return 0  # only checking the name
  local pats=()
  for r in $rows; do pats+=("$RUNS/$r-f*"); done
  local folds=()
  [ "$TRAIN_FOLDS" != "$FOLDS" ] && folds=(--folds "$(seq -s, 0 $((TRAIN_FOLDS - 1)))")
  echo "### $1"
  "$PYTHON" "$REPO/scripts/summarise_runs.py" --tta "$tta" --rare 0 "${folds[@]}" --runs "${pats[@]}"
}

die() { echo "notes_experiments.sh: error: $*" >&2; exit 2; }

if [ "${1:-}" = "--table" ]; then
  shift
  tables=(${@:-a b b-fixres b-fixres48 c d d-10crop e f x-strong r r-avg o})
  for t in "${tables[@]}"; do
    table "$t" check || die "unknown table '$t'; tables: a b b-fixres b-fixres48 c d d-10crop e f x-strong r r-avg o oa"
  done
  [ "$TRAIN_FOLDS" -ge 2 ] 2>/dev/null ||
    die "TRAIN_FOLDS=$TRAIN_FOLDS: cross-fitted thresholds need runs of at least 2 folds"
  [ -d "$RUNS" ] || die "no runs folder $RUNS: train rows first (or set RUNS)"
  for t in "${tables[@]}"; do table "$t" || FAILED=$((FAILED + 1)); done
  exit $((FAILED > 0))
fi
rows=("$@")
if [ ${#rows[@]} -eq 0 ]; then  # every row but the apparel plan's (oa-*)
  for r in $PRIORITY "${ORDER[@]}"; do [[ "$r" == oa-* ]] || rows+=("$r"); done
fi
for r in "${rows[@]}"; do
  [ -n "${ROW_ARGS[$r]+x}" ] || die "unknown row '$r'; rows: ${ORDER[*]} (or --table SECTION, --help)"
done
[ -f "$DATA/train.csv" ] || die "no dataset at $DATA (no train.csv): make it with
  python tools/make_mosaic.py --npz fashion_mnist.npz --out $DATA --size 64 --n-train 600 --n-test 10"
mkdir -p "$RUNS"
declare -A done_rows=()
for r in "${rows[@]}"; do
  [ -n "${done_rows[$r]+x}" ] && continue
  done_rows[$r]=1
  train "$r"
done
predictions
[ "$FAILED" -eq 0 ] || { echo "== $FAILED step(s) FAILED: see above; a rerun skips what finished" >&2; exit 1; }
