#!/usr/bin/env bash
# Issue 37 part 0: the default memory's recall recipes over ten model seeds, one thread each.
#   bash experiments/seed_sweep.sh passkey LABEL "SEEDS" [memory_recall.py options...]
#   bash experiments/seed_sweep.sh mqar LABEL "SEEDS" [memory_recall.py options...]
# One JSON line per run in docs/results/memory/robust_TASK.jsonl; `python experiments/robust_report.py`
# makes the tables (distribution over seeds, never the best seed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
task=$1 label=$2 seeds=$3
shift 3
mkdir -p runs/robust
for seed in $seeds; do
  "$PY" experiments/memory_recall.py --task "$task" --label "$label" --seed "$seed" \
    --out "docs/results/memory/robust_$task.jsonl" "$@" > "runs/robust/$task-$label-s$seed.log" 2>&1
done
