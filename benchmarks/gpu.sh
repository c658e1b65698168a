#!/usr/bin/env bash
# One command for a CUDA machine: the GPU-relevant tests, then the benchmarks on cuda, in < 8 min
# (Triton, which the memory's scan uses on CUDA, comes with CUDA builds of torch).
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

# the fast-path equality tests (every registered kernel, the Triton ones compiled here, against its reference) and the
# benchmark smoke tests (CPU oracles; seconds)
timeout 150 "$PYTHON" -m pytest -q -x tests/kernels tests/models/components tests/benchmarks 2>&1 | tee "$TESTS_LOG"

# the benchmarks on the GPU; 16K/128K contexts, fp32 and bf16, and the gated scan's paths
timeout 240 "$PYTHON" -m benchmarks.run_all --device cuda --only training generation mfu ssm gated_scan --output "$OUT"

# issue 16's GPU targets: the default 216M config, bf16, 4K context, batch 8 (SMT >= 0.7x SWA's tokens/s, >= 35% MFU)
{
    echo
    echo "### GPU targets: default config, bf16, 4K, batch 8"
    echo
    timeout 90 "$PYTHON" -m benchmarks.mfu --size default --context 4096 --batch 8 --dtypes bfloat16 \
        --archs smt swa --repeats 3 --device cuda
} | tee -a "$OUT"

for section in "Training throughput" "Generation" "Model FLOP utilisation" "Mamba block" "Gated scan" "GPU targets"; do
    grep -q "### $section" "$OUT" || { echo "gpu.sh: $OUT lacks the section '$section'" >&2; exit 1; }
done
echo "gpu.sh: wrote $OUT and $TESTS_LOG"
