#!/usr/bin/env bash
# Issue 37 part 5: the text regime on one GPU in one command, under 10 minutes on one H100 with start-up.
# Trains SMT, SWA, full attention and Mamba (configs/experiments/text_*.yaml, parameter-matched) in turn on
# the same CPython tokens with the CUDA paths, as many steps as a 330 s training budget allows for all four
# (equal tokens), evaluates each with the recall split, and writes docs/results/text/gpu.jsonl, the table
# (docs/results/text/gpu.md) and the two charts. The same chain runs on CPU at toy size in the tests
# (tests/test_gpu_text.py), so the first GPU minute is not spent on a typo.
#   bash experiments/gpu_text.sh            [PYTHON=python3] [GPU_TEXT_ARGS="--budget-s 330"]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SMT_DATA_DIR="${SMT_DATA_DIR:-$(cd .. && pwd)/shared/data}"
mkdir -p docs/results/text
# shellcheck disable=SC2086
timeout 560 "$PYTHON" experiments/gpu_text.py --device cuda ${GPU_TEXT_ARGS:-} 2>&1 | tee docs/results/text/gpu.log
"$PYTHON" experiments/text_report.py table docs/results/text/gpu.jsonl > docs/results/text/gpu.md
