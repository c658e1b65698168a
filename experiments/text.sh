#!/usr/bin/env bash
# The text regime of issue 37 (docs/TEXT.md), command by command, one thread each:
#   bash experiments/text.sh train NAME [SEED [DATA_SEED]]   train configs/experiments/text_NAME.yaml
#   bash experiments/text.sh eval NAME [SEED [DATA_SEED]]    stream the first 1024 tokens of every held-out
#                                                module: loss by position and the recall split
# SEED seeds the model and, without DATA_SEED, the order of the training stream; with DATA_SEED
# the order is its own (training.data_seed) and the run is NAME-sSEED-dDATA_SEED. LR=X in the
# environment trains at learning rate X instead of the config's: the run is NAME-lrX-s....
#   python experiments/text_report.py            the tables and the plots (docs/TEXT.md)
# Runs write to runs/text/NAME-sSEED (git-ignored); logs to runs/text/logs.
set -euo pipefail
cd "$(dirname "$0")/.."
SMT=${SMT:-.venv/bin/smt}
DATA=${SMT_DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
stage=$1 name=$2 seed=${3:-1} data_seed=${4:-}
LR=${LR:-}
tag=$name${LR:+-lr$LR}-s$seed${data_seed:+-d$data_seed}
run=runs/text/$tag
mkdir -p runs/text/logs
case $stage in
  train)
    "$SMT" train --config "configs/experiments/text_$name.yaml" --seed "$seed" ${data_seed:+--training.data_seed "$data_seed"} ${LR:+--training.lr "$LR"} --output_dir "$run" \
      --train_data "$DATA/code/train.jsonl" --valid_data "$DATA/code/valid.jsonl" \
      > "runs/text/logs/$tag.train.log" 2>&1 ;;
  eval)
    "$SMT" eval --checkpoint "$run" --data "$DATA/code/valid.jsonl" --positions 1024 --recall-split 2 --recall-edges 32,186,512 \
      --out "$run/eval" > "runs/text/logs/$tag.eval.log" 2>&1 ;;
  *) echo "usage: text.sh train|eval NAME [SEED [DATA_SEED]]" >&2; exit 2 ;;
esac
