#!/usr/bin/env python
"""Is a trained memory's far recall limited by its SSM's decay? Scale every A (the decay rate,
exp(dt * A) per write) of a saved SMT by a factor at evaluation and score passkey recall by key
distance again (no training): if recall does not move, forgetting through decay is not what
limits it.

    python experiments/decay_scaling.py runs/sp/ckpt/post-sp0.5-s5 --scales 1 0.5 0.25 --length 896
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from smt.evaluation.tasks import TaskConfig, passkey_accuracy_by_distance
from smt.pretrained import from_pretrained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a saved SMT (memory_recall.py --save DIR)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--length", type=int, default=896)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    task = TaskConfig(name="passkey", seq_len=64, key_length=1, n_values=8, n_filler=16, filler="random")
    for scale in args.scales:
        model = from_pretrained(args.model).eval()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("A_log"):
                    parameter.add_(math.log(scale))
        accuracy = passkey_accuracy_by_distance(model, task, args.length, n_samples=args.samples, seed=args.seed)
        print(json.dumps({"model": args.model, "A_scale": scale, "length": args.length, "accuracy": accuracy}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
