"""`smt bench`: run the speed benchmarks (the `benchmarks` package at the repository root)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

SECTIONS = ("training", "generation", "mfu", "ssm", "profile")


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="training / generation / MFU / SSM speed benchmarks")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke test in seconds")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None, help="write the markdown report here (and a .json beside it)")
    parser.set_defaults(run=run)


def _load_run_all():
    """benchmarks.run_all, importable from the repository root (it is not installed with smt)."""
    try:
        return importlib.import_module("benchmarks.run_all")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[3]
        if not (root / "benchmarks" / "run_all.py").is_file():
            raise FileNotFoundError(
                "the benchmarks package is not importable: run `smt bench` from the SMT repository "
                "checkout (an editable install), or `python -m benchmarks.run_all` there") from None
        sys.path.insert(0, str(root))
        return importlib.import_module("benchmarks.run_all")


def run(args: argparse.Namespace) -> int:
    argv = ["--only", *args.only, "--device", args.device, "--dtypes", *args.dtypes]
    if args.quick:
        argv.append("--quick")
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.output is not None:
        argv += ["--output", str(args.output)]
    return _load_run_all().main(argv)
