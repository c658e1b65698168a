#!/usr/bin/env bash
# One command for a CUDA machine: the GPU-relevant tests, then the benchmarks on cuda, in < 8 min.
# Writes benchmarks/results-gpu.md (+ .json) and benchmarks/results-gpu-tests.txt; exits non-zero
# when CUDA is missing, a test fails, the benchmark fails, or the report lacks a section.
# Usage (from the repository root): bash benchmarks/gpu.sh   [PYTHON=/path/to/python]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${OUT:-benchmarks/results-gpu.md}"
TESTS_LOG="benchmarks/results-gpu-tests.txt"

"$PYTHON" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu.sh: torch.cuda.is_available() is False (torch %s); run this on a CUDA machine "
             "with a CUDA build of torch" % torch.__version__)
print("gpu.sh: torch", torch.__version__, "on", torch.cuda.get_device_name(0))
try:
    import mamba_ssm, causal_conv1d  # noqa: F401
    print("gpu.sh: mamba-ssm / causal-conv1d kernels importable: the CUDA sequence path is used")
except Exception as error:
    print("gpu.sh: mamba-ssm kernels not importable (%s): the pure-PyTorch scan is used" % error)
PY

# the fast-path equality tests and the benchmark smoke tests (CPU oracles; seconds)
timeout 180 "$PYTHON" -m pytest -q -x tests/models/components tests/benchmarks 2>&1 | tee "$TESTS_LOG"

# the benchmarks on the GPU; 16K/128K contexts, fp32 and bf16
timeout 300 "$PYTHON" -m benchmarks.run_all --device cuda --output "$OUT"

for section in "Training throughput" "Generation" "Model FLOP utilisation" "Mamba block"; do
    grep -q "### $section" "$OUT" || { echo "gpu.sh: $OUT lacks the section '$section'" >&2; exit 1; }
done
echo "gpu.sh: wrote $OUT and $TESTS_LOG"
