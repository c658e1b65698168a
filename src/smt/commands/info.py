"""`smt info`: print a preset's configuration summary and parameter counts."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    parser = sub.add_parser("info", help="show a preset's configuration and parameter counts")
    parser.add_argument("--preset", default="wikitext103", help="wikitext103, pg19, small or tiny")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from smt import StrideHybridConfig, StrideHybridModel

    config = StrideHybridConfig.preset(args.preset)
    config.summary()
    print(json.dumps(StrideHybridModel(config).count_parameters(), indent=2))
    return 0
