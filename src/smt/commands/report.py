"""`smt report RUN_DIR [--out FILE]`: gather a run's metrics and plots into one Markdown file."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser("report", help="write a Markdown report of a run (metrics, evaluations, plots)")
    parser.add_argument("run_dir", help="a run directory (smt train's run.output_dir)")
    parser.add_argument("--out", default=None, help="output file (default RUN_DIR/REPORT.md)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from smt.evaluation.report import write_report

    print(write_report(args.run_dir, args.out))
    return 0
