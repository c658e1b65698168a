#!/usr/bin/env python
"""Which writes does a gated memory keep? (docs/notebook/Q14-hard-write-gates.md)

With `write_gate` every write has a gate g in [0, 1]: the memory keeps g of the state the write
produces and 1 - g of the state before it, and a hard gate (`write_gate_sparsity > 0`) can be
exactly 0, which leaves the state as it was. If every write of filler is closed, the state at the
question depends only on the writes that cover the key, so the model sees the same memory at any
distance and any length. This script measures how close a trained passkey model comes: on held-out
prompts of each length (keys at every depth) it reports the mean gate and the fraction of exactly
closed gates for the writes whose window holds the key and for all other writes (`write_gate_usage`,
the same measurement `smt diagnose` makes).

It also tests the claim directly (--prefixes): the same 64-token prompts (key 16 tokens back)
with P tokens of random filler put in front. If every prefix write is closed and nothing else
carries the prefix forward, the logits at the question are bit-identical for every P. With
pooling over memory they are not: each write pools the slots of the writes before it, a second
recurrence beside the SSM state that no gate closes (docs/notebook/Q14-hard-write-gates.md).

    python experiments/gate_sparsity.py runs/q14/hg05-s1 --lengths 64 256 896 --prefixes 32 192 832

--text FILE.jsonl --tokenizer DIR gives the gates on text instead: every write of the first
--documents documents (their first --tokens tokens each), e.g. a model from experiments/code.sh:

    python experiments/gate_sparsity.py runs/code/smt_gated-s1/checkpoints/step_000500 --lengths \
        --text ../shared/data/code/valid.jsonl --tokenizer runs/tokenizers/code_bpe4096

--mqar-lengths gives the gates of an MQAR model (memory_recall.py --task mqar) on held-out rows:

    python experiments/gate_sparsity.py runs/q15/gates-added-s1 --lengths --mqar-lengths 64 896

--recall-lengths scores passkey recall by key distance on prompts of those lengths (held-out, as
memory_recall.py does), for lengths beyond the ones the training run evaluated.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import Tensor

from smt.evaluation.memory_diagnostics import write_gate_usage
from smt.evaluation.passkey import FIRST_VALUE, synthetic_passkey
from smt.evaluation.tasks import EVAL_SEED_OFFSET, TaskConfig, passkey_accuracy_by_distance
from smt.models import load_model
from smt.training.train_task import TaskBatcher


def gate_statistics(model, length: int, n: int, seed: int, n_values: int = 8, n_filler: int = 16) -> dict:
    """`smt.evaluation.memory_diagnostics.write_gate_usage` on n held-out prompts of `length` tokens."""
    if not model.config.write_gate:
        raise SystemExit("the model has no write gate (write_gate: false)")
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    samples = [synthetic_passkey(length, float(torch.rand((), generator=generator)), generator, 1, n_values,
                                 n_filler, n_distractors=0, filler="random") for _ in range(n)]
    ids = torch.stack([s.input_ids for s in samples])
    usage = write_gate_usage(model, ids, torch.tensor([s.key_start for s in samples]))
    return {"length": length, **usage}


@torch.no_grad()
def prefix_invariance(model, prefix: int, n: int, seed: int, distance: int = 16, n_values: int = 8,
                      n_filler: int = 16) -> dict:
    """Accuracy on n 64-token prompts (key `distance` back) and on the same prompts after `prefix`
    filler tokens; the largest gate of a prefix write and the largest change of the final logits."""
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    length = 64
    samples = [synthetic_passkey(length, (length - 2 - distance) / (length - 3), generator, 1, n_values, n_filler,
                                 n_distractors=0, filler="random") for _ in range(n)]
    short = torch.stack([s.input_ids for s in samples])
    answers = torch.stack([s.answer[0] for s in samples])
    first_filler = FIRST_VALUE + n_values  # the passkey filler ids follow the key symbols
    long = torch.cat([torch.randint(first_filler, first_filler + n_filler, (n, prefix), generator=generator), short], 1)
    model.eval()
    short_logits, _ = model(short)
    long_logits, aux = model(long)
    prefix_writes = prefix // model.config.stride
    return {"prefix": prefix, "distance": distance,
            "accuracy_without_prefix": float((short_logits[:, -1].argmax(-1) == answers).float().mean()),
            "accuracy_with_prefix": float((long_logits[:, -1].argmax(-1) == answers).float().mean()),
            "largest_prefix_gate": float(aux["write_gates"][:, :prefix_writes].max()) if prefix_writes else None,
            "largest_logit_change": float((short_logits[:, -1] - long_logits[:, -1]).abs().max())}


def gate_shares(gates: Tensor) -> dict:
    """Mean gate and the shares exactly closed / fully open over all the writes given."""
    g = gates.float().flatten()
    return {"writes": int(g.numel()), "mean": float(g.mean()), "closed": float((g == 0).float().mean()),
            "open": float((g == 1).float().mean())}


@torch.no_grad()
def mqar_gates(model, length: int, n: int, seed: int, pairs: int = 8) -> dict:
    """The gates over every write of n held-out MQAR rows of `length` tokens (pairs at a random depth,
    no shortcuts, as memory_recall.py trains), with the gate's own bias and weight norm."""
    task = TaskConfig(name="mqar", seq_len=length, n_pairs=pairs, n_queries=pairs, n_keys=16, n_values=16,
                      mqar_pairs_at="random")
    ids, _ = next(iter(TaskBatcher(task, n, seed=seed + EVAL_SEED_OFFSET)))
    _, aux = model.eval()(ids)
    gate = model.pooling.gate
    return {"mqar_length": length, **gate_shares(aux["write_gates"]), "gate_bias": float(gate.bias),
            "gate_weight_norm": float(gate.weight.norm())}


@torch.no_grad()
def text_gates(model, path: str, tokenizer_path: str, documents: int, tokens: int) -> dict:
    """Mean gate and the shares exactly closed / fully open over every write of the first `documents`
    documents of a JSON-lines file ({"text": ...} per line), each cut to its first `tokens` tokens."""
    from smt.data import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    gates = []
    with open(path, encoding="utf-8") as handle:
        for line, _ in zip(handle, range(documents)):
            ids = tokenizer.encode(json.loads(line)["text"])[:tokens]
            _, aux = model.eval()(torch.tensor(ids)[None])
            gates.append(aux["write_gates"].float().flatten())
    return {"text": path, "documents": len(gates), **gate_shares(torch.cat(gates))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model saved with memory_recall.py --save")
    parser.add_argument("--lengths", type=int, nargs="*", default=[64, 256, 896])
    parser.add_argument("--prefixes", type=int, nargs="*", default=[])
    parser.add_argument("--recall-lengths", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=1, help="the held-out prompts of this training seed (all parts)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--mqar-lengths", type=int, nargs="*", default=[],
                        help="the gates on held-out MQAR rows (8 pairs at a random depth) of these lengths")
    parser.add_argument("--text", default=None, help="a JSON-lines text file: the gates on text")
    parser.add_argument("--tokenizer", default=None, help="with --text: the tokenizer directory")
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--out", default=None, help="append one JSON line per length here")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    rows = [gate_statistics(model, length, args.samples, args.seed) for length in args.lengths]
    rows += [prefix_invariance(model, prefix, args.samples, args.seed) for prefix in args.prefixes]
    task = TaskConfig(name="passkey", seq_len=64, key_length=1, n_values=8, n_filler=16, filler="random")
    rows += [{"recall_length": length, "seed": args.seed,
              "accuracy": passkey_accuracy_by_distance(model, task, length, n_samples=args.samples, seed=args.seed)}
             for length in args.recall_lengths]
    rows += [mqar_gates(model, length, args.samples, args.seed) for length in args.mqar_lengths]
    if args.text:
        rows.append(text_gates(model, args.text, args.tokenizer, args.documents, args.tokens))
    for stats in rows:
        stats["model"] = args.model
        print(json.dumps(stats))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(stats) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
