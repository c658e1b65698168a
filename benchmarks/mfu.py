"""Model FLOP utilisation of the training step against the measured dense matmul peak.

Model FLOPs come from `benchmarks.flops.model_flops` (matmuls only, forward + backward). The peak
is the best of torch.mm on large squares in the same process and dtype.

    OMP_NUM_THREADS=2 python -m benchmarks.mfu --context 4096
    python -m benchmarks.mfu --size default --batch 8 --dtypes bfloat16 --archs smt swa --device cuda  # the GPU target
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import bench_config, markdown_table, synchronize, time_call
from benchmarks.flops import model_flops
from benchmarks.training import arch_config, measure_cell

TARGET = 0.85  # SMT's MFU at least this times the window-only model's in the same run (issue 16, target 4)


def matmul_peak(dtype: str, device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of torch.mm on n x n squares of `dtype` (median of repeats)."""
    torch_dtype = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    timing = time_call(lambda: torch.mm(a, b), device, warmup=2, repeats=repeats)
    synchronize(device)
    return 2 * n**3 / timing.median


def run(context: int = 4096, dtypes=("float32", "bfloat16"), archs=("smt", "smt-seed", "swa"),
        size: str = "small", device: str = "cpu", repeats: int = 3, peak_n: int = 2048, batch: int = 1) -> list[dict]:
    peaks = {dtype: matmul_peak(dtype, device, peak_n) for dtype in ("float32", "bfloat16")}
    rows = []
    for dtype in dtypes:
        cell = measure_cell(archs, context, dtype, size, device, batch, repeats=repeats)
        for arch in archs:
            flops = batch * model_flops(arch_config(arch, size, device), context)["total"]
            row = cell[arch]
            achieved = flops / row["step_s"]
            rows.append({"arch": arch, "context": context, "dtype": dtype, "batch": batch, "step_s": row["step_s"],
                         "tokens_per_s": row["tokens_per_s"],
                         "model_gflop": flops / 1e9, "achieved_gflops": achieved / 1e9,
                         "peak_fp32_gflops": peaks["float32"] / 1e9,
                         "peak_bf16_gflops": peaks["bfloat16"] / 1e9,
                         "mfu_vs_same_dtype_peak": achieved / peaks[dtype],
                         "mfu_vs_bf16_peak": achieved / peaks["bfloat16"]})
    swa = {row["dtype"]: row for row in rows if row["arch"] == "swa"}
    for row in rows:
        if row["arch"] != "swa" and row["dtype"] in swa:
            row["tokens_per_s_vs_swa"] = row["tokens_per_s"] / swa[row["dtype"]]["tokens_per_s"]
            row["mfu_vs_swa"] = row["mfu_vs_same_dtype_peak"] / swa[row["dtype"]]["mfu_vs_same_dtype_peak"]
            if row["arch"] == "smt":
                row["meets_target"] = row["mfu_vs_swa"] >= TARGET
    return rows


COLUMNS = ["dtype", "arch", "context", "batch", "step_s", "tokens_per_s", "model_gflop", "achieved_gflops",
           "peak_fp32_gflops", "peak_bf16_gflops", "mfu_vs_same_dtype_peak", "mfu_vs_bf16_peak", "tokens_per_s_vs_swa",
           "mfu_vs_swa", "meets_target"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--size", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="rows per step")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--archs", nargs="+", default=["smt", "smt-seed", "swa"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = run(args.context, tuple(args.dtypes), tuple(args.archs), args.size, args.device, args.repeats,
               batch=args.batch)
    print(markdown_table(rows, COLUMNS))
    print("flops by part (smt):", model_flops(bench_config(args.size, args.device), args.context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
