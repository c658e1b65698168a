#!/usr/bin/env python
"""Do a trained SMT's memory slots drift along a long stream? Feed random filler (no key) through
saved models and compare the slots of the first writes with those 200+ writes later: their mean
norm, the cosine between the mean slot early and late (1.0: no drift), and how much slots vary
across streams (the room a key has to show itself in).

    python experiments/slot_drift.py runs/mem/ckpt/dt0.01-s5 runs/sp/ckpt/post-sp0.5-s5 --length 896
"""

from __future__ import annotations

import argparse
import json

import torch

from smt.pretrained import from_pretrained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="saved SMT models (memory_recall.py --save DIR)")
    parser.add_argument("--length", type=int, default=896)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--first-filler-id", type=int, default=10, help="passkey: 2 + n_values")
    parser.add_argument("--n-filler", type=int, default=16)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    ids = args.first_filler_id + torch.randint(0, args.n_filler, (args.streams, args.length), generator=generator)
    for path in args.models:
        model = from_pretrained(path).eval()
        with torch.no_grad():
            slots = model(ids)[1]["memory"]  # (streams, writes, d)
        early, late = slots[:, 8:16], slots[:, -24:]
        record = {
            "model": path, "length": args.length,
            "norm_early": round(float(early.norm(dim=-1).mean()), 3),
            "norm_late": round(float(late.norm(dim=-1).mean()), 3),
            "cosine_mean_early_late": round(float(torch.nn.functional.cosine_similarity(
                early.mean((0, 1)), late.mean((0, 1)), dim=0)), 4),
            "spread_early": round(float(early.std(0).mean()), 4),
            "spread_late": round(float(late.std(0).mean()), 4),
        }
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
