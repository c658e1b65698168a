"""`smt bench`: run the speed benchmarks (the `benchmarks` folder of an SMT checkout, not installed with the
stride-memory distribution) as `python -m benchmarks.run_all` in a subprocess from the checkout's root."""

from __future__ import annotations

import argparse
import subprocess
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


def checkout_root(candidates: tuple[Path, ...] | None = None) -> Path:
    """The SMT checkout that holds benchmarks/run_all.py: the one this package runs from (an editable
    install), else the current folder. Raises FileNotFoundError saying where to run from."""
    candidates = candidates or (Path(__file__).resolve().parents[3], Path.cwd())
    for folder in candidates:
        if (folder / "benchmarks" / "run_all.py").is_file():
            return folder
    raise FileNotFoundError("the benchmarks are not installed with stride-memory: run `smt bench` from an SMT "
                            "repository checkout (its root holds benchmarks/run_all.py), or `python -m "
                            "benchmarks.run_all` there")


def command(args: argparse.Namespace) -> list[str]:
    """The benchmark run's command line."""
    argv = [sys.executable, "-m", "benchmarks.run_all", "--only", *args.only, "--device", args.device,
            "--dtypes", *args.dtypes]
    if args.quick:
        argv.append("--quick")
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.output is not None:
        argv += ["--output", str(Path(args.output).resolve())]  # the run's folder is the checkout's root
    return argv


def run(args: argparse.Namespace) -> int:
    return subprocess.run(command(args), cwd=checkout_root()).returncode
