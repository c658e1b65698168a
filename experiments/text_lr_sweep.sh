#!/usr/bin/env bash
# Issue 37 part 4: the learning rate of every model of the text regime (docs/TEXT.md) picked on the
# same small sweep, on the *training* modules only (experiments/tuning_split.py: a tenth of
# train.jsonl held out as the tuning split; valid.jsonl, on which docs/TEXT.md reports, is never read).
#   bash experiments/text_lr_sweep.sh NAME LR [STEPS]   train configs/experiments/text_NAME.yaml for STEPS
#       (default 300) at LR on the tuning-train modules; the final evaluation reads the whole tuning split
#   python experiments/text_report.py sweep --runs runs/text/tune      the table: model x lr, best marked
set -euo pipefail
cd "$(dirname "$0")/.."
SMT=${SMT:-.venv/bin/smt}
PY=${PY:-.venv/bin/python}
DATA=${SMT_DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
name=$1 lr=$2 steps=${3:-300}
split=runs/text/tune
mkdir -p "$split/logs"
[ -f "$split/tune.jsonl" ] || "$PY" experiments/tuning_split.py "$DATA/code/train.jsonl" "$split"
"$SMT" train --config "configs/experiments/text_$name.yaml" --seed 1 --output_dir "$split/$name-lr$lr" \
  --train_data "$split/train.jsonl" --valid_data "$split/tune.jsonl" --training.lr "$lr" \
  --training.max_steps "$steps" --training.eval_interval "$steps" --run.full_final_eval true \
  > "$split/logs/$name-lr$lr.log" 2>&1
