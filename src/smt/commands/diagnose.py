"""`smt diagnose --checkpoint DIR`: why the memory does or does not carry information beyond the window.

Runs the memory diagnostics (smt.evaluation.memory_diagnostics) on synthetic passkey prompts
(token ids: a one-symbol key among `--n-values` values at depths spread over the prompt, random
filler, the question at the end): the gradient of the loss at every memory write by distance,
the pooling weight on the key, the SSM retention per write (and accumulated from the key to the
question), the attention mass the transformer puts on memory slots, and for a gated memory the
write gates of the key's writes against the rest. Prints a summary and
writes diagnostics.json and PNGs to --out (default RUN_DIR/diagnostics).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("diagnose", help="memory diagnostics on passkey prompts: gradients at the writes, "
                                             "pooling on the key, SSM retention, attention on slots",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="run, checkpoints/, step or model directory")
    parser.add_argument("--seq-len", "--seq_len", type=int, default=128, help="prompt length in tokens")
    parser.add_argument("--samples", type=int, default=64, help="number of prompts (key depths spread evenly)")
    parser.add_argument("--key-length", "--key_length", type=int, default=1)
    parser.add_argument("--n-values", "--n_values", type=int, default=8, help="key symbols")
    parser.add_argument("--n-filler", "--n_filler", type=int, default=None,
                        help="filler symbols (default: the model's vocabulary - 2 - n_values)")
    parser.add_argument("--out", default=None, help="output directory (default RUN_DIR/diagnostics)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from smt.commands.eval import default_out_dir, load_for_eval
    from smt.evaluation.memory_diagnostics import diagnose, plot_diagnostics, summarize
    from smt.evaluation.passkey import FIRST_VALUE
    from smt.evaluation.tasks import TaskConfig

    model, _, directory = load_for_eval(args.checkpoint, args.device)
    vocab = model.config.vocab_size
    n_filler = args.n_filler if args.n_filler is not None else vocab - FIRST_VALUE - args.n_values
    if n_filler < 1:
        raise ValueError(f"the model's vocabulary ({vocab}) leaves no filler symbols after the 2 markers and "
                         f"{args.n_values} key values; lower --n-values")
    if args.samples < 1:
        raise ValueError(f"--samples={args.samples} must be >= 1")
    task = TaskConfig(name="passkey", seq_len=args.seq_len, key_length=args.key_length, n_values=args.n_values,
                      n_filler=n_filler)
    result = diagnose(model, task, n_samples=args.samples, seed=args.seed)
    result["checkpoint"] = str(directory)
    out = Path(args.out) if args.out else default_out_dir(args.checkpoint, "diagnostics")
    out.mkdir(parents=True, exist_ok=True)
    pictures = plot_diagnostics(result, out)
    (out / "diagnostics.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(summarize(result))
    print("wrote " + ", ".join(str(p) for p in [out / "diagnostics.json", *pictures]))
    return 0
