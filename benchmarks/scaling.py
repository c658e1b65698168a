"""Cost against context: training tokens/s and peak training memory from 4K to 64K tokens, SMT beside
the sliding-window and full-attention baselines.

The issue's target "cost grows linearly": SMT's tokens/s at 64K is at least 0.9x its tokens/s at 4K,
and its peak training memory is linear in the context (reported as GiB per 1K tokens).
A cell (one arch at one context) is one training step of `benchmarks.training` (forward + backward +
AdamW, batch 1), run in a fresh subprocess so that no peak leaks from one cell into the next: the
child builds the model and the ids, hands freed heap back (malloc_trim), resets its peak RSS (VmHWM,
through /proc/self/clear_refs; where that is refused, the peak after building is the baseline),
runs one warm-up step and `--repeats` timed steps, and reports the peak RSS above the post-build
RSS (on CUDA: peak allocated bytes above those after building) as the step's working memory:
activations, gradients, AdamW's state and scratch.
Full attention above `--max-gpt-context` is reported as not run; a child that dies (e.g. out of
memory) is reported as failed with the reason. The memory fit is GiB = a + b * (context / 1024) per
arch, by least squares over the measured contexts; b is the GiB per 1K tokens and max_rel_deviation
the worst distance of a point from the line, relative to the point.

The RESULTS.md table:

    OMP_NUM_THREADS=2 python -m benchmarks.scaling --contexts 4096 16384 65536 --archs smt swa gpt \\
        --plot benchmarks/scaling.png --json benchmarks/scaling.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import machine_info, markdown_table, synchronize, time_call
from benchmarks.training import ARCHS, build_step

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.9  # SMT tokens/s at the longest context over its tokens/s at the shortest
GIB = 2**30


def _peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, not ru_maxrss, which also holds the peak of the
    parent that forked it (the kernel keeps the pre-exec peak there)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _reset_peak(device: str) -> int:
    """Forget the peak so far; returns the baseline in bytes that later peaks are measured from."""
    if torch.device(device).type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:  # hand freed heap back, so that the step's allocations show up as RSS growth
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets the peak RSS to the current RSS
    except OSError:
        pass
    return _peak_rss()


def _peak(device: str) -> int:
    if torch.device(device).type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _peak_rss()


def measure(arch: str, context: int, dtype: str = "float32", size: str = "small", device: str = "cpu",
            batch: int = 1, repeats: int = 3) -> dict:
    """One cell in this process: median step time and the step's peak memory above the built model."""
    step = build_step(arch, context, dtype, size, device, batch)
    gc.collect()
    baseline = _reset_peak(device)
    timing = time_call(step, device, warmup=1, repeats=repeats)
    peak_gib = (_peak(device) - baseline) / GIB
    tokens = batch * context
    return {"arch": arch, "context": context, "dtype": dtype, "batch": batch, "status": "ok",
            "step_s": timing.median, "step_s_min": timing.minimum, "tokens_per_s": tokens / timing.median,
            "peak_gib": peak_gib, "gib_per_1k_tokens": peak_gib / (tokens / 1024)}


def run_cell(arch: str, context: int, dtype: str = "float32", size: str = "small", device: str = "cpu",
             batch: int = 1, repeats: int = 3, timeout: float | None = None) -> dict:
    """`measure` in a fresh `python -m benchmarks.scaling --cell` process; a failed row if it dies."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--cell", arch, str(context), "--dtypes", dtype,
               "--size", size, "--device", device, "--batch", str(batch), "--repeats", str(repeats),
               "--threads", str(torch.get_num_threads())]
    row = {"arch": arch, "context": context, "dtype": dtype, "batch": batch}
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"failed: timed out after {timeout:g} s"}
    if done.returncode != 0:
        if done.returncode < 0:
            name = signal.Signals(-done.returncode).name
            reason = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        else:
            last = (done.stderr.strip().splitlines() or ["no stderr"])[-1]
            reason = f"exit {done.returncode}: {last[:200]}"
        return {**row, "status": f"failed: {reason}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(contexts=(4096, 16384, 65536), archs=("smt", "swa", "gpt"), dtypes=("float32",), size: str = "small",
        device: str = "cpu", batch: int = 1, repeats: int = 3, max_gpt_context: int = 16384,
        timeout: float | None = None, log=lambda s: print(s, file=sys.stderr)) -> list[dict]:
    """Every (dtype, arch, context) cell, each in its own subprocess, with ratios and the target."""
    unknown = sorted(set(archs) - set(ARCHS))
    if unknown:
        raise ValueError(f"unknown architecture(s) {unknown}; use some of {list(ARCHS)}")
    rows = []
    for dtype in dtypes:
        for arch in archs:
            for context in sorted(contexts):
                if arch == "gpt" and context > max_gpt_context:
                    rows.append({"arch": arch, "context": context, "dtype": dtype, "batch": batch,
                                 "status": "not run (above --max-gpt-context)"})
                    continue
                log(f"[scaling] {dtype} {arch} {context} ...")
                rows.append(run_cell(arch, context, dtype, size, device, batch, repeats, timeout))
    return with_targets(rows)


def with_targets(rows: list[dict]) -> list[dict]:
    """tokens/s over the same arch's at the shortest context; SMT's target at the longest."""
    shortest, longest = min(r["context"] for r in rows), max(r["context"] for r in rows)
    base = {(r["dtype"], r["arch"]): r["tokens_per_s"] for r in rows
            if r["context"] == shortest and r["status"] == "ok"}
    for row in rows:
        key = (row["dtype"], row["arch"])
        if row["status"] == "ok" and key in base:
            row["tokens_per_s_vs_shortest"] = row["tokens_per_s"] / base[key]
            if row["arch"] == "smt" and row["context"] == longest and longest > shortest:
                row["target"] = f">= {TARGET}x of {shortest}"
                row["meets"] = row["tokens_per_s_vs_shortest"] >= TARGET
    return rows


def fit_memory(rows: list[dict]) -> list[dict]:
    """Least-squares GiB = a + b * (context / 1024) per (dtype, arch) over its measured contexts."""
    fits = []
    for key in dict.fromkeys((r["dtype"], r["arch"]) for r in rows):
        points = [(r["context"] / 1024, r["peak_gib"]) for r in rows
                  if (r["dtype"], r["arch"]) == key and r["status"] == "ok"]
        if len(points) < 2:
            continue
        n = len(points)
        mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
        b = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / sum((x - mean_x) ** 2 for x, _ in points))
        a = mean_y - b * mean_x
        deviations = [abs(y - (a + b * x)) / y for x, y in points if y > 0]
        fits.append({"dtype": key[0], "arch": key[1], "points": n, "gib_per_1k_tokens_fit": b,
                     "intercept_gib": a, "max_rel_deviation": max(deviations) if deviations else None})
    return fits


def plot(rows: list[dict], path: Path, title: str = "") -> None:
    """Two panels against context: tokens/s (log2 axis), and peak GiB (points; linear axis, so that
    each arch's least-squares line a + b * context, dashed, is straight)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = {(f["dtype"], f["arch"]): f for f in fit_memory(rows)}
    several_dtypes = len({r["dtype"] for r in rows}) > 1
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for key in dict.fromkeys((r["dtype"], r["arch"]) for r in rows):
        ok = [r for r in rows if (r["dtype"], r["arch"]) == key and r["status"] == "ok"]
        if not ok:
            continue
        label = f"{key[1]} ({key[0]})" if several_dtypes else key[1]
        contexts = [r["context"] for r in ok]
        line, = speed.plot(contexts, [r["tokens_per_s"] for r in ok], "o-", label=label)
        memory.plot(contexts, [r["peak_gib"] for r in ok], "o", color=line.get_color(), label=label)
        if key in fits:
            xs = [0, contexts[-1]]
            fit = fits[key]
            memory.plot(xs, [fit["intercept_gib"] + fit["gib_per_1k_tokens_fit"] * x / 1024 for x in xs], "--",
                        color=line.get_color(), linewidth=0.8,
                        label=f"{label} fit: {fit['gib_per_1k_tokens_fit']:.3g} GiB / 1K tokens")
        if key[1] == "smt" and ok[0]["context"] == min(r["context"] for r in rows):
            speed.axhline(TARGET * ok[0]["tokens_per_s"], color=line.get_color(), linestyle=":", linewidth=0.8,
                          label=f"target: {TARGET}x smt at {ok[0]['context']}")
    contexts = sorted({r["context"] for r in rows})
    for ax, ylabel in ((speed, "training tokens / s"), (memory, "peak step memory (GiB)")):
        if ax is speed:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        ax.set_xticks(contexts, [f"{c // 1024}K" if c % 1024 == 0 else str(c) for c in contexts])
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    speed.set_title("throughput (forward + backward + AdamW)")
    memory.set_title("peak memory above the built model")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


COLUMNS = ["dtype", "arch", "context", "status", "tokens_per_s", "step_s", "peak_gib", "gib_per_1k_tokens",
           "tokens_per_s_vs_shortest", "target", "meets"]
FIT_COLUMNS = ["dtype", "arch", "points", "gib_per_1k_tokens_fit", "intercept_gib", "max_rel_deviation"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--archs", nargs="+", default=["smt", "swa", "gpt"], help=f"some of {list(ARCHS)}")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--size", default="small", choices=["small", "toy"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per cell, after one warm-up step")
    parser.add_argument("--max-gpt-context", type=int, default=16384, help="full attention runs up to here")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell before it counts as failed")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows, fits and machine here")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of both curves here")
    parser.add_argument("--cell", nargs=2, metavar=("ARCH", "CONTEXT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cell:
        arch, context = args.cell[0], int(args.cell[1])
        print(json.dumps(measure(arch, context, args.dtypes[0], args.size, args.device, args.batch, args.repeats)))
        return 0
    rows = run(args.contexts, args.archs, args.dtypes, args.size, args.device, args.batch, args.repeats,
               args.max_gpt_context, args.timeout)
    fits = fit_memory(rows)
    print(markdown_table(rows, COLUMNS))
    print()
    print(markdown_table(fits, FIT_COLUMNS))
    if args.json is not None:
        record = {"machine": machine_info(args.device), "args": sys.argv[1:] if argv is None else argv,
                  "rows": rows, "memory_fit": fits}
        args.json.write_text(json.dumps(record, indent=2), encoding="utf-8")
    if args.plot is not None:
        plot(rows, args.plot, f"{args.size} model, batch {args.batch}, {', '.join(args.dtypes)}, "
                              f"threads: {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
