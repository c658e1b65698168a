"""The `smt` command: one subcommand per module in smt.commands (train, generate, eval, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

# each module defines add_parser(subparsers) and run(args) -> int
COMMANDS = ("train", "generate", "eval", "analyze", "diagnose", "report", "bench", "info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smt", description="Stride Memory Transformer: train, evaluate, serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"smt.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"smt.commands.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"smt {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
