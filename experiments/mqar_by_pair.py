#!/usr/bin/env python
"""MQAR accuracy of a saved model by the queried pair's place: which pair (1st..Pth in the
sequence) and which half of the memory write that covers it (a write summarises S tokens, so at
S = 4 two pairs share one write), and by the query's place in the query section beside the
elimination floor (docs/notebook/Q10-mqar-shortcuts.md: with every pair queried once, later answers can be guessed
from the values not yet given). A diagnostic for docs/notebook/Q09-Q10: if one SSM write cannot
bind two pairs, the pair written first and the one written second of a write are recalled unequally.

    python experiments/memory_recall.py --task mqar --pairs 8 --steps 2000 --model memory_read=slots+state \
        --save runs/mq/read_s1
    python experiments/mqar_by_pair.py runs/mq/read_s1 --pairs 8 --seq-len 64 --seed 1 --answers given
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from smt.evaluation.mqar import accuracy_by_query, no_binding_accuracy_by_query
from smt.evaluation.tasks import EVAL_SEED_OFFSET, TaskConfig
from smt.models import load_model


@torch.no_grad()
def accuracy_by_pair(model, task: TaskConfig, n_samples: int, seed: int) -> dict[int, float]:
    """{pair index (0 = first in the sequence): accuracy} over held-out samples, as evaluate_task draws them."""
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    hits, counts = defaultdict(int), defaultdict(int)
    for _ in range(n_samples):
        sample = task.sample_sequence(generator)
        logits, _ = model(sample.input_ids[None])
        keys = sample.input_ids[sample.pair_positions].tolist()
        for position in sample.query_positions.tolist():
            pair = keys.index(int(sample.input_ids[position]))
            hits[pair] += int(logits[0, position].argmax() == sample.targets[position])
            counts[pair] += 1
    return {pair: hits[pair] / counts[pair] for pair in sorted(counts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model directory saved by memory_recall.py --save")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (held-out samples are drawn from it)")
    parser.add_argument("--answers", default="hidden", choices=["hidden", "given"],
                        help="the MQAR form the model was trained on (Q9's models: given)")
    parser.add_argument("--out", default=None, help="append one JSON line here")
    args = parser.parse_args(argv)
    model = load_model(args.model).eval()
    task = TaskConfig(name="mqar", seq_len=args.seq_len, n_pairs=args.pairs, n_queries=args.pairs, n_keys=16,
                      n_values=16, n_filler=16, mqar_answers=args.answers)
    by_pair = accuracy_by_pair(model, task, args.samples, args.seed)
    stride = model.config.stride
    # pair i's value sits at token 2i + 1; the write after token t covers it when t is the next multiple
    # of S minus one, so the pair's place in its write is which pair-slot of the S tokens it fills
    place = {pair: ((2 * pair) % stride) // 2 for pair in by_pair}
    by_place = defaultdict(list)
    for pair, accuracy in by_pair.items():
        by_place[place[pair]].append(accuracy)
    print("| pair | " + " | ".join(str(p + 1) for p in by_pair) + " |")
    print("|---|" + "---|" * len(by_pair))
    print("| accuracy | " + " | ".join(f"{a:.2f}" for a in by_pair.values()) + " |")
    print("| place in its write | " + " | ".join(str(place[p] + 1) for p in by_pair) + " |")
    summary = {p + 1: sum(v) / len(v) for p, v in sorted(by_place.items())}
    print("mean accuracy by place in the write:", {k: round(v, 3) for k, v in summary.items()})
    generator = torch.Generator().manual_seed(args.seed + EVAL_SEED_OFFSET)
    samples = [task.sample_sequence(generator) for _ in range(args.samples)]
    by_query = accuracy_by_query(model, samples)
    floor = no_binding_accuracy_by_query(samples, args.answers)
    print("| query (place in the query section) | " + " | ".join(str(j + 1) for j in range(len(by_query))) + " |")
    print("|---|" + "---|" * len(by_query))
    print("| accuracy | " + " | ".join(f"{a:.2f}" for a in by_query) + " |")
    print("| best without binding | " + " | ".join(f"{a:.2f}" for a in floor) + " |")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(json.dumps({"model": args.model, "stride": stride, "by_pair": by_pair,
                                  "by_place_in_write": summary, "by_query": by_query,
                                  "samples": args.samples}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
