#!/usr/bin/env bash
# The Gutenberg comparison of docs/RESULTS.md, command by command (issue 8).
#   bash experiments/gutenberg.sh train NAME [smt train options]   one training run, 1 thread
#   bash experiments/gutenberg.sh eval NAME                         its evaluations
#   bash experiments/gutenberg.sh all                                everything, two runs at a time
#   python experiments/gutenberg_report.py                           tables + plots from runs/gutenberg
# NAME is a config configs/experiments/gutenberg_NAME.yaml; NAME_time is that config trained for the
# equal-wall-clock budget (steps from the measured throughput, see time_steps below); NAME_long is
# a passkey-task config trained for 2400 steps instead of 600; NAME_seed2 is NAME from seed 2.
# Runs write to runs/gutenberg/NAME (git-ignored); `smt eval` reproduces every row from there.
set -euo pipefail
cd "$(dirname "$0")/.."
SMT=${SMT:-.venv/bin/smt}
DATA=${SMT_DATA_DIR:-../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# Steps of NAME_time: the SMT run's step count scaled by NAME's measured training throughput over
# SMT's (median tokens/s of the equal-token runs), so both train for about the same wall-clock time.
time_steps() {
  .venv/bin/python - "$1" <<'PY'
import json, statistics, sys
def tps(name):
    rows = [json.loads(l) for l in open(f"runs/gutenberg/{name}/metrics.jsonl") if l.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    return statistics.median(r["tokens_per_s"] for r in train[1:]), train[-1]["step"]
smt, steps = tps("smt")
print(round(steps * tps(sys.argv[1])[0] / smt))
PY
}

train() {
  local name=$1; shift
  local config=$name extra=()
  if [[ $name == *_time ]]; then
    config=${name%_time}
    extra=(--max_steps "$(time_steps "$config")" --output_dir "runs/gutenberg/$name")
  elif [[ $name == *_seed2 ]]; then  # the same run from another seed: the noise between runs
    config=${name%_seed2}
    extra=(--seed 2 --output_dir "runs/gutenberg/$name")
  elif [[ $name == *_long ]]; then  # a synthetic-task run trained 4x longer
    config=${name%_long}
    extra=(--max_steps 2400 --output_dir "runs/gutenberg/$name")
  fi
  mkdir -p runs/gutenberg/logs
  "$SMT" train --config "configs/experiments/gutenberg_$config.yaml" "${extra[@]}" "$@" \
    > "runs/gutenberg/logs/$name.log" 2>&1
}

evaluate() {
  local name=$1 run=runs/gutenberg/$1
  if [[ $name == passkey_* ]]; then
    "$SMT" eval --checkpoint "$run" --task passkey --samples 256 --out "$run/eval"
    return
  fi
  local positions=(--positions 4096 --position-pieces)
  [[ $name == *_time ]] && positions=()  # the equal-time runs: perplexity only
  "$SMT" eval --checkpoint "$run" --data "$DATA/gutenberg/valid" "${positions[@]}" --out "$run/eval"
  case $name in smt|swa|gpt|mamba)
    "$SMT" eval --checkpoint "$run" --data "$DATA/wikitext/wiki.valid.tokens" --max-documents 20 \
      --out "$run/eval_wikitext"
    "$SMT" eval --checkpoint "$run" --passkey 64,256,1024 --depths 0,0.5,1 --samples 10 \
      --filler "$DATA/gutenberg/valid/$(ls "$DATA/gutenberg/valid" | head -n 1)" --out "$run/eval_passkey"
  esac
  if [[ $name == smt ]]; then
    book=$DATA/gutenberg/valid/pg84-frankenstein.txt
    "$SMT" analyze --checkpoint "$run" --text "$book" --out "$run/analysis/$(basename "$book" .txt)"
  fi
}

case ${1:-} in
  train) shift; train "$@" ;;
  eval) evaluate "$2" ;;
  all)
    for group in "smt gpt" "swa mamba" "smt_s16 smt_n4" "swa_time mamba_time" \
                "passkey_smt passkey_swa" "passkey_gpt passkey_mamba" "passkey_smt_long smt_tokpool" \
                "smt_seed2"; do
      for name in $group; do (train "$name" && evaluate "$name") & done
      wait
    done ;;
  *) sed -n 2,9p "$0"; exit 2 ;;
esac
