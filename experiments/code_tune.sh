#!/usr/bin/env bash
# Tuning for the code comparison on the *training* modules only
# (docs/notebook/Q15-curricula-gated-code-parallel-scan.md): a tenth of
# train.jsonl's modules (chosen by a hash of the path) is held out as a tuning split, the rest
# trains, and valid.jsonl, on which the final rows are reported, is never read.
#   bash experiments/code_tune.sh NAME SEED LABEL [--section.field VALUE ...]
#       train configs/experiments/code_NAME.yaml with the overrides on the tuning-train modules,
#       then stream the tuning modules whole (loss by position) into runs/code/tune/LABEL-sSEED
#   python experiments/code_report.py --runs runs/code/tune    the tuning table
# The tokenizer is the one of experiments/code.sh (trained on all of train.jsonl, no labels), so a
# tuned setting carries over to the final runs unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
SMT=${SMT:-.venv/bin/smt}
PY=${PY:-.venv/bin/python}
DATA=${SMT_DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
name=$1 seed=$2 label=$3
shift 3
split=runs/code/tune
mkdir -p "$split/logs"
[ -f "$split/tune.jsonl" ] || "$PY" experiments/tuning_split.py "$DATA/code/train.jsonl" "$split"
if [ ! -e runs/tokenizers/code_bpe4096 ]; then
  "$PY" -c "from smt.training.data_setup import prepare_tokenizer; from smt.training.run_config import RunConfig
prepare_tokenizer(RunConfig(train_data='$DATA/code/train.jsonl', tokenizer='runs/tokenizers/code_bpe4096', tokenizer_vocab_size=4096))"
fi
run=$split/$label-s$seed
"$SMT" train --config "configs/experiments/code_$name.yaml" --seed "$seed" --output_dir "$run" \
  --train_data "$split/train.jsonl" --valid_data "$split/tune.jsonl" "$@" > "$split/logs/$label-s$seed.log" 2>&1
"$SMT" eval --checkpoint "$run" --data "$split/tune.jsonl" --positions 1024 --out "$run/eval" \
  >> "$split/logs/$label-s$seed.log" 2>&1
