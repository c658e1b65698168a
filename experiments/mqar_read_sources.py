#!/usr/bin/env python
"""Where does an MQAR query's memory read come from? (docs/MEMORY.md Q12)

An SMT with a per-token read (`memory_read: slots+state`) reads the last Mamba
layer's state h with each token's query q: r = out(gate * (h q)), and h is a decayed sum of the
writes' updates dt * x B^T (times the write gate, where there is one). So the read splits exactly
into one term per write. For held-out MQAR prompts this script measures, at every query, the share
(by norm) of the read that comes from the write holding the queried pair, from the writes of the
other pairs and from the filler writes; how alike the queries of different keys are (mean cosine);
and the step size dt, the norm of B and the gate of pair writes against filler writes, for the
trained model and the same configuration at initialisation. A memory that binds must read mostly
from the queried pair's write, or read it in a direction the other pairs' writes do not share (the
shares are by norm). Which channel carries the answer is measured directly too: the accuracy of the
trained model with its read zeroed, and with its memory slots zeroed (docs/MEMORY.md Q13).

    python experiments/mqar_read_sources.py runs/mq4/p2_s1 --pairs 2
"""

from __future__ import annotations

import argparse
import json

import torch

from smt.evaluation.tasks import EVAL_SEED_OFFSET, TaskConfig, evaluate_task
from smt.models import build_model, load_model


@torch.no_grad()
def record_writes(model, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run the model; return per write (n, W, ...) the last Mamba layer's dt, x, B and the gate."""
    mixer, pooling = model.ssm.layers[-1].mixer, model.pooling
    seen: dict[str, list] = {"dt": [], "x": [], "B": [], "gate": []}
    ssm_inputs, write_gate = mixer._ssm_inputs, pooling.write_gate

    def recorded_inputs(x):
        dt, B, C = ssm_inputs(x)
        seen["dt"].append(dt)
        seen["x"].append(x)
        seen["B"].append(B)
        return dt, B, C

    def recorded_gate(pooled):
        gate = write_gate(pooled)
        if gate is not None:
            seen["gate"].append(gate)
        return gate

    model.memory.fused = False  # one step per write, in order
    mixer._ssm_inputs, pooling.write_gate = recorded_inputs, recorded_gate
    try:
        model(inputs)
    finally:
        del mixer._ssm_inputs, pooling.write_gate
    # the loop records one write per call (B, ...); the tokens-only scan all writes at once (B, W, ...)
    writes = {name: torch.cat([v if v.dim() == 3 else v[:, None] for v in values], 1).float()
              for name, values in seen.items() if name != "gate"}
    ungated = writes["dt"].new_ones(writes["dt"].shape[:2])
    writes["gate"] = torch.stack(seen["gate"], 1).float() if seen["gate"] else ungated
    return writes


@torch.no_grad()
def read_sources(model, task: TaskConfig, n: int, seed: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    samples = [task.sample_sequence(generator) for _ in range(n)]
    inputs = torch.stack([s.input_ids for s in samples])
    writes = record_writes(model.eval(), inputs)
    S = model.config.stride
    A = -torch.exp(model.ssm.layers[-1].mixer.A_log.float())  # (d_inner, d_state)
    n_writes = writes["dt"].shape[1]
    shares = {"queried_pair": [], "other_pairs": [], "filler": []}
    pair_write = torch.zeros(n, n_writes, dtype=torch.bool)
    for row, sample in enumerate(samples):
        value_writes = (sample.pair_positions + S + 1) // S - 1  # the first write that sees the value
        write_of = {int(sample.input_ids[p]): int(w) for p, w in zip(sample.pair_positions, value_writes)}
        pair_write[row, list(write_of.values())] = True
        for t in sample.query_positions.tolist():
            visible = t // S  # writes made by tokens before t
            q, gate = model.memory_read.queries(model.wte(inputs[row, t])[None, None], model.pooling,
                                                model.ssm.layers[-1])
            q, gate = q[0, 0], (gate[0, 0] if gate is not None else 1.0)
            keep = torch.ones_like(A)
            parts = torch.zeros(visible)
            for w in range(visible - 1, -1, -1):
                dt, x, B, g = (writes[k][row, w] for k in ("dt", "x", "B", "gate"))
                parts[w] = (gate * (keep * (g * dt * x)[:, None] * B[None, :] @ q)).norm()
                keep = keep * (g * torch.exp(dt[:, None] * A) + 1 - g)
            own = write_of[int(inputs[row, t])]
            others = [w for w in write_of.values() if w != own]
            total = parts.sum()
            shares["queried_pair"].append(float(parts[own] / total))
            shares["other_pairs"].append(float(parts[others].sum() / total))
            shares["filler"].append(float(1 - (parts[own] + parts[others].sum()) / total))
    result = {f"share_{k}": sum(v) / len(v) for k, v in shares.items()}
    keys = torch.arange(task.n_keys)  # how alike the queries of different keys are: 1 = one direction for all
    q, _ = model.memory_read.queries(model.wte(keys)[None], model.pooling, model.ssm.layers[-1])
    q = torch.nn.functional.normalize(q[0], dim=-1)
    cosine = q @ q.T
    result["query_cosine_between_keys"] = float(cosine[~torch.eye(len(keys), dtype=torch.bool)].mean())
    result["pair_writes_fraction"] = float(pair_write.float().mean())
    for name, values in (("dt", writes["dt"].mean(-1)), ("B_norm", writes["B"].norm(dim=-1)), ("gate", writes["gate"])):
        result[f"{name}_pair_writes"] = float(values[pair_write].mean())
        result[f"{name}_filler_writes"] = float(values[~pair_write].mean())
    return result


@torch.no_grad()
def channel_ablation(model, task: TaskConfig, n: int, seed: int) -> dict[str, float]:
    """Held-out MQAR accuracy as trained, with the per-token read zeroed, and with the slots zeroed."""
    model.eval()
    full = evaluate_task(model, task, n, seed)["accuracy"]
    model.memory_read.forward = lambda x, *args: torch.zeros_like(x)  # an instance attribute, deleted after
    try:
        without_read = evaluate_task(model, task, n, seed)["accuracy"]
    finally:
        del model.memory_read.forward
    model.memory_proj.forward = lambda out: out.new_zeros(*out.shape[:-1], model.config.d_model)
    try:
        without_slots = evaluate_task(model, task, n, seed)["accuracy"]
    finally:
        del model.memory_proj.forward
    return {"full": full, "without_read": without_read, "without_slots": without_slots}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model directory saved by memory_recall.py --save")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="append one JSON line here")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    if getattr(model, "memory_read", None) is None:
        raise SystemExit(f"{args.model} has no per-token read (memory_read: slots+state)")
    task = TaskConfig(name="mqar", seq_len=args.seq_len, n_pairs=args.pairs, n_queries=args.pairs, n_keys=16,
                      n_values=16, n_filler=16)
    torch.manual_seed(args.seed)
    result = {"model": args.model, "pairs": args.pairs}
    result["accuracy_by_channel"] = channel_ablation(model, task, args.samples, args.seed)
    print("accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy_by_channel"].items()))
    for name, candidate in (("trained", model), ("at initialisation", build_model(model.config))):
        result[name] = read_sources(candidate, task, args.samples, args.seed + 3 * EVAL_SEED_OFFSET)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result[name].items()))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
