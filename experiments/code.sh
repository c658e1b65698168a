#!/usr/bin/env bash
# The code comparison of docs/notebook/Q08-real-code.md (issue 13), command by command.
#   bash experiments/code.sh NAME [SEED]   train configs/experiments/code_NAME.yaml (1 thread), then
#                                          stream the held-out modules whole: loss by position
#   python experiments/code_report.py      the table (mean and seed range per position bucket)
# Runs write to runs/code/NAME-sSEED (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
SMT=${SMT:-.venv/bin/smt}
DATA=${SMT_DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
name=$1 seed=${2:-1337}
run=runs/code/$name-s$seed
mkdir -p runs/code/logs
"$SMT" train --config "configs/experiments/code_$name.yaml" --seed "$seed" --output_dir "$run" \
  --train_data "$DATA/code/train.jsonl" --valid_data "$DATA/code/valid.jsonl" > "runs/code/logs/$name-s$seed.log" 2>&1
"$SMT" eval --checkpoint "$run" --data "$DATA/code/valid.jsonl" --positions 1024 --out "$run/eval" \
  >> "runs/code/logs/$name-s$seed.log" 2>&1
