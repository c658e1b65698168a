"""Run every benchmark in one process and write one markdown report (plus JSON rows).

    python -m benchmarks.run_all                      # the full CPU run behind RESULTS.md
    python -m benchmarks.run_all --quick              # toy sizes, seconds (smoke test)
    python -m benchmarks.run_all --device cuda --output benchmarks/results-gpu.md

The scaling section runs every cell in a subprocess (its own peak memory); its plot is
`python -m benchmarks.scaling --plot ...`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import generation, mfu, profiles, scaling, ssm, training
from benchmarks.common import machine_info, markdown_table

SECTIONS = ("training", "generation", "mfu", "ssm", "gated_scan", "profile", "scaling")


@dataclass
class Plan:
    """Sizes of one run; `quick` shrinks everything to a toy model."""

    size: str
    contexts: tuple[int, ...]
    lengths: tuple[int, ...]
    max_gpt_length: int
    mfu_context: int
    peak_n: int
    ssm_length: int
    ssm_d_model: int
    repeats: int
    gen_steps: int
    gen_chunk: int
    scaling_contexts: tuple[int, ...]
    max_gpt_context: int
    gated_shapes: tuple[tuple[int, int, int, int], ...]  # (batch, writes, d_inner, d_state)

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls("toy", (64, 128), (32, 96), 96, 64, 128, 32, 32, 1, 3, 32, (64, 128), 64, ((1, 32, 16, 4),))
        return cls("small", (1024, 4096, 16384), (1024, 16384, 131072), 16384, 4096, 2048, 2048, 256, 3, 20, 4096,
                   (4096, 16384, 65536), 16384, ((8, 256, 512, 16), (1, 256, 512, 16), (1, 1024, 128, 8)))


def gpt_available() -> bool:
    return importlib.util.find_spec("smt.models.baselines") is not None


def run(sections=SECTIONS, quick: bool = False, device: str = "cpu", dtypes=("float32", "bfloat16"),
        log=print) -> dict:
    """All requested sections; returns {"machine", "plan", section: rows or text, "seconds"}."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {unknown}; use some of {list(SECTIONS)}")
    plan = Plan.make(quick)
    has_gpt = gpt_available()
    archs = tuple(a for a in training.ARCHS if a != "gpt" or has_gpt)
    results: dict = {"machine": machine_info(device), "plan": vars(plan), "gpt_baseline": has_gpt,
                     "command": " ".join(["python -m benchmarks.run_all", *sys.argv[1:]])}
    started = time.perf_counter()
    for section in sections:
        t0 = time.perf_counter()
        log(f"[bench] {section} ...")
        if section == "training":
            rows = training.run(plan.contexts, dtypes, archs, plan.size, device, plan.repeats)
            results[section] = training.with_targets(rows)
        elif section == "generation":
            max_gpt = plan.max_gpt_length if has_gpt else 0
            rows = generation.run(plan.lengths, dtypes, plan.size, device, max_gpt, plan.gen_chunk, plan.gen_steps)
            results[section] = generation.with_targets(rows)
        elif section == "mfu":
            results[section] = mfu.run(plan.mfu_context, dtypes, ("smt", "smt-seed", "swa"), plan.size,
                                       device, plan.repeats, plan.peak_n)
        elif section == "ssm":
            results[section] = ssm.run(plan.ssm_length, plan.ssm_d_model, dtypes=dtypes, device=device,
                                       repeats=plan.repeats)
        elif section == "gated_scan":
            results[section] = ssm.gated_scan_rows(plan.gated_shapes, device, repeats=plan.repeats)
        elif section == "profile":
            results[section] = {dtype: profiles.profile_train_step("smt", plan.mfu_context, dtype, plan.size, device)
                                for dtype in dtypes}
        elif section == "scaling":
            scaling_archs = tuple(a for a in ("smt", "swa", "gpt") if a != "gpt" or has_gpt)
            rows = scaling.run(plan.scaling_contexts, scaling_archs, dtypes, plan.size, device,
                               repeats=plan.repeats, max_gpt_context=plan.max_gpt_context, log=log)
            results[section], results["scaling_fit"] = rows, scaling.fit_memory(rows)
        log(f"[bench] {section} done in {time.perf_counter() - t0:.0f} s")
    results["seconds"] = time.perf_counter() - started
    return results


def to_markdown(results: dict) -> str:
    m = results["machine"]
    parts = [f"Command: `{results['command']}`  ",
             f"Machine: {m['cpu']} ({m['cpu_flags']}), device {m['device']}"
             + (f" ({m['gpu']})" if "gpu" in m else "")
             + f", torch {m['torch']}, {m['threads']} threads, Python {m['python']}  ",
             f"Total time: {results['seconds']:.0f} s"]
    if not results["gpt_baseline"]:
        parts.append("\nThe full-attention baseline (smt.models.baselines) is not in this build: no gpt rows.")
    tables = {"training": ("Training throughput", training.COLUMNS),
              "generation": ("Generation", generation.COLUMNS),
              "mfu": ("Model FLOP utilisation", mfu.COLUMNS),
              "ssm": ("Mamba block: sequence vs step mode", ssm.COLUMNS),
              "gated_scan": ("Gated scan: compiled (C on CPU, Triton on CUDA), fused and reference",
                             ssm.GATED_COLUMNS),
              "scaling": ("Scaling: training tokens/s and peak step memory against context", scaling.COLUMNS),
              "scaling_fit": ("Scaling: peak memory = a + b * context/1K (least squares)", scaling.FIT_COLUMNS)}
    for key, (title, columns) in tables.items():
        if key in results:
            parts.append(f"\n### {title}\n\n{markdown_table(results[key], columns)}")
    for dtype, table in results.get("profile", {}).items():
        parts.append(f"\n### Profile: SMT training step, {dtype}\n\n```\n{table}\n```")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke test in seconds")
    parser.add_argument("--only", nargs="+", default=list(SECTIONS), help=f"some of {list(SECTIONS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="write the markdown report here (and .json)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads}: use a positive thread count")
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} but CUDA is not available here; use --device cpu")
    results = run(args.only, args.quick, args.device, tuple(args.dtypes), log=lambda s: print(s, file=sys.stderr))
    report = to_markdown(results)
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report, encoding="utf-8")
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
