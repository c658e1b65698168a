"""The `smt` command: one subcommand per module in smt.commands (train, generate, eval, evaluate, ...)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

# each module defines add_parser(subparsers) and run(args) -> int
COMMANDS = ("train", "generate", "eval", "evaluate", "analyze", "diagnose", "report", "bench", "info", "export")


class _Parser(argparse.ArgumentParser):
    """No prefix matching: `--max_step 30` must not silently run as `--max_steps 30`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from smt import __version__

    parser = _Parser(prog="smt", description="Stride Memory Transformer: train, evaluate, generate. Every option "
                                             "takes - or _ between words alike (--max-steps = --max_steps).")
    parser.add_argument("--version", action="version", version=f"smt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"smt.commands.{name}").add_parser(sub)
    for command in sub.choices.values():
        accept_both_spellings(command)
    return parser


def accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Every --long-option also as --long_option and the other way round (one rule for every command:
    `smt train --max-steps` as `smt eval --segment_len`); the other spelling is not listed in --help."""
    for action in list(parser._actions):
        for option in list(action.option_strings):
            if not option.startswith("--"):
                continue
            body = option[2:]
            for other in ("--" + body.replace("_", "-"), "--" + body.replace("-", "_")):
                parser._option_string_actions.setdefault(other, action)


def _unknown_options(parser: argparse.ArgumentParser, command: str, extras: list[str]) -> str:
    """One line per unknown option, with the closest valid ones."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    valid = [option for action in sub._actions for option in action.option_strings]
    lines = []
    for index, item in enumerate(extras):
        if not item.startswith("-"):
            if index == 0 or not extras[index - 1].startswith("-") or "=" in extras[index - 1]:
                lines.append(f"unexpected argument {item!r}")
            continue  # else the value of the unknown option before it
        flag = item.split("=", 1)[0]
        close = difflib.get_close_matches(flag, valid, n=3, cutoff=0.6)
        lines.append(f"unknown option {flag}" + (f"; did you mean {' or '.join(close)}?" if close else
                                                 f"; see `smt {command} --help`"))
    return "; ".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        print(f"smt {args.command}: error: {_unknown_options(parser, args.command, extras)}", file=sys.stderr)
        return 2
    from smt.config import DEVICE_FIX, is_device_name

    if getattr(args, "device", None) is not None and not is_device_name(args.device):
        print(f"smt {args.command}: error: --device {args.device}: unknown device; {DEVICE_FIX}", file=sys.stderr)
        return 2
    from smt.errors import plain_warnings
    from smt.training.stop_signals import StopGraceExpired, TrainingInterrupted

    try:
        with plain_warnings():
            return int(args.run(args) or 0)
    except TrainingInterrupted as stop:
        print(f"smt {args.command}: {stop}", file=sys.stderr)
        return 143 if stop.signal_name == "SIGTERM" else 130
    except StopGraceExpired as stop:
        print(f"smt {args.command}: {stop}; continue with the same command plus --resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"smt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the one boundary: every other error ends in one line
        return _report(args.command, error)


def _report(command: str, error: Exception) -> int:
    """Exit 2 with the error's line when it is written for the user, else 1 with where the traceback is."""
    from smt.errors import known_error_line, unexpected_error_line

    line = known_error_line(error, "--output_dir" if command == "train" else "--out")
    if line is not None:
        print(f"smt {command}: error: {line}", file=sys.stderr)
        return 2
    print(f"smt {command}: error: {unexpected_error_line(error)}", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
