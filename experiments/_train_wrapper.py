"""Shared code of train_wikitext.py / train_pg19.py: the original flags mapped onto `smt train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(default_config: str, description: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description,
                                     epilog="Any other `smt train` option (--lr, --max_steps, "
                                            "--model.d_model, ...) is passed through.")
    parser.add_argument("--config", default=str(REPO / "configs" / default_config))
    parser.add_argument("--n_ssm_outputs", type=int, help="N: memory slots in the window")
    parser.add_argument("--m_input_tokens", type=int, help="M: newest tokens in the window")
    parser.add_argument("--stride", type=int, help="S: a memory write every S tokens")
    parser.add_argument("--batch_size", type=int, help="per process")
    parser.add_argument("--epochs", type=float, help="passes over the training tokens (replaces max_steps)")
    parser.add_argument("--train_data", help="file, directory or dataset name")
    parser.add_argument("--valid_data")
    parser.add_argument("--tokenizer", help="tokenizer.json, a directory, or a hub name")
    parser.add_argument("--output_dir")
    parser.add_argument("--resume", action="store_true")
    args, passthrough = parser.parse_known_args(argv)
    overrides = list(passthrough)
    for name in ("n_ssm_outputs", "m_input_tokens", "stride", "batch_size", "train_data",
                 "valid_data", "tokenizer", "output_dir"):
        value = getattr(args, name)
        if value is not None:
            overrides += [f"--{name}", str(value)]
    if args.epochs is not None:
        overrides += ["--epochs", str(args.epochs), "--max_steps", "null"]
    command = ["train", "--config", args.config, *overrides] + (["--resume"] if args.resume else [])
    from smt.cli import main as smt_main

    return smt_main(command)


if __name__ == "__main__":
    sys.exit(main("cpu_gutenberg_smt.yaml", "train SMT"))
