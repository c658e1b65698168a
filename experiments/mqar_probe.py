#!/usr/bin/env python
"""Is the key-value binding in the memory state? Linear probes on an SMT's SSM state
(docs/notebook/Q10-mqar-shortcuts.md).

An SMT with `memory_read: slots+state` reads the last Mamba layer's scan state with each token's
own query. If it fails on MQAR, either the writes never put the binding into that state, or they
do and the read does not get it out. This script feeds held-out MQAR prompts up to the first query
(the pairs and the gap), takes that state (d_inner x d_state numbers) and fits, on training
prompts, one linear classifier per key from the state to the key's value; the held-out accuracy
says how much of the binding a linear read could recover. A second probe asks only which values
the prompt holds (the set, no binding). The same probes on the same model at its initialisation
are the control: a random state keeps some of its input linearly too.

    python experiments/mqar_probe.py runs/mq3/read6000_s1 --seed 1
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from smt.evaluation.tasks import EVAL_SEED_OFFSET, TaskConfig
from smt.models import build_model, load_model


@torch.no_grad()
def states_and_labels(model, task: TaskConfig, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, features) last-layer scan states before the first query, and (n, n_keys) the value of
    each key (-1 where the key is not in the prompt)."""
    generator = torch.Generator().manual_seed(seed)
    samples = [task.sample_sequence(generator) for _ in range(n)]
    first_query = int(samples[0].query_positions[0])
    inputs = torch.stack([s.input_ids[:first_query] for s in samples])
    _, aux = model.eval()(inputs)
    states = aux["state"].buffers["ssm_scan"][:, -1].flatten(1).float()
    labels = torch.full((n, task.n_keys), -1, dtype=torch.long)
    for row, s in enumerate(samples):
        keys, values = s.input_ids[s.pair_positions], s.input_ids[s.pair_positions + 1] - task.n_keys
        labels[row, keys] = values
    return states, labels


def fit_probe(x: torch.Tensor, target: torch.Tensor, outputs: int, loss_fn=F.cross_entropy, steps: int = 300):
    """A linear probe (full batch, Adam, weight decay) on standardised features; returns its predictor."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    probe = torch.nn.Linear(x.shape[1], outputs)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = loss_fn(probe((x - mean) / std), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lambda z: probe((z - mean) / std).detach()


def values_present(labels: torch.Tensor, n_values: int) -> torch.Tensor:
    """(n, n_values) 1.0 where the prompt holds the value."""
    present = torch.zeros(len(labels), n_values)
    for row in range(len(labels)):
        present[row, labels[row][labels[row] >= 0]] = 1.0
    return present


def probe_accuracy(train: tuple, test: tuple, task: TaskConfig) -> dict[str, float]:
    (x, labels), (xt, labels_t) = train, test
    hits = counted = 0
    for key in range(task.n_keys):  # the binding: one probe per key, on the prompts that hold it
        rows, rows_t = labels[:, key] >= 0, labels_t[:, key] >= 0
        predict = fit_probe(x[rows], labels[rows, key], task.n_values)
        hits += int((predict(xt[rows_t]).argmax(-1) == labels_t[rows_t, key]).sum())
        counted += int(rows_t.sum())
    predict = fit_probe(x, values_present(labels, task.n_values), task.n_values, F.binary_cross_entropy_with_logits)
    set_accuracy = float(((predict(xt) > 0).float() == values_present(labels_t, task.n_values)).float().mean())
    return {"value_of_key": hits / counted, "values_present": set_accuracy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model directory saved by memory_recall.py --save")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--train", type=int, default=4000, help="prompts to fit the probes on")
    parser.add_argument("--test", type=int, default=1000, help="held-out prompts to score them on")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="append one JSON line here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    trained = load_model(args.model)
    task = TaskConfig(name="mqar", seq_len=args.seq_len, n_pairs=args.pairs, n_queries=args.pairs, n_keys=16,
                      n_values=16, n_filler=16)
    results = {}
    for name, model in (("trained", trained), ("at initialisation", build_model(trained.config))):
        train = states_and_labels(model, task, args.train, args.seed + 2 * EVAL_SEED_OFFSET)
        test = states_and_labels(model, task, args.test, args.seed + 3 * EVAL_SEED_OFFSET)
        results[name] = probe_accuracy(train, test, task)
        print(f"{name}: value of a key {results[name]['value_of_key']:.3f} (knowing only the values: "
              f"{1 / args.pairs:.3f}), values present {results[name]['values_present']:.3f} (guessing: "
              f"{max(args.pairs, task.n_values - args.pairs) / task.n_values:.3f})")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(json.dumps({"model": args.model, "train": args.train, "test": args.test, **results}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
