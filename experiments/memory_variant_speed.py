#!/usr/bin/env python
"""Training-step time of the memory variants of docs/MEMORY.md, as ratios to the default SMT.

One process, the variants timed in turns (so machine noise hits all alike), on the recall
experiments' shape (the tiny preset, batch 32 x 64 tokens, fp32, AdamW step included).

    python experiments/memory_variant_speed.py [--repeats 5] [--steps 10] [--only gate tokens-only]

--only keeps the default, SWA and the variants whose names contain one of the given words.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from smt import StrideHybridConfig
from smt.models.baselines import build_model, matched_baseline

VARIANTS = {
    "SMT default (pool over memory + tokens, Mamba memory)": {},
    "tokens-only pooling": {"pool_over_memory": False},
    "SimpleSSM memory": {"ssm_type": "simple"},
    "Mamba's dt range [1e-3, 1e-1]": {"ssm_dt_min": 1e-3, "ssm_dt_max": 0.1},
    "mimetic init": {"ssm_init": "mimetic"},
    "per-token read of the SSM state (memory_read: slots+state)": {"memory_read": "slots+state"},
    "pooling position bias": {"pool_position_bias": True},
    "gated writes (write_gate: true)": {"write_gate": True},
    "tokens-only pooling + read + position bias, S = 2": {"pool_over_memory": False, "memory_read": "slots+state",
                                                          "pool_position_bias": True, "stride": 2},
    "tokens-only pooling + read + position bias, S = 1": {"pool_over_memory": False, "memory_read": "slots+state",
                                                          "pool_position_bias": True, "stride": 1},
    "tokens-only pooling + hard gates, sparsity 0.5 (Q14)": {"pool_over_memory": False, "write_gate": True,
                                                             "write_gate_sparsity": 0.5},
}


def step_seconds(model, ids: torch.Tensor, optimizer, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        logits, _ = model(ids)
        F.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--only", nargs="*", default=None, help="words; time only variants named with one")
    args = parser.parse_args(argv)
    default = next(iter(VARIANTS))
    variants = {name: overrides for name, overrides in VARIANTS.items()
                if args.only is None or name == default or any(word in name for word in args.only)}
    torch.manual_seed(0)
    base = StrideHybridConfig.tiny(vocab_size=26)
    models = {name: build_model(base.replace(**overrides)) for name, overrides in variants.items()}
    models["SWA (matched, no memory)"] = build_model(matched_baseline(base, "swa"))
    optimizers = {name: torch.optim.AdamW(m.parameters(), 1e-3) for name, m in models.items()}
    ids = torch.randint(0, 26, (32, args.seq_len))
    for name, model in models.items():  # warm-up
        step_seconds(model, ids, optimizers[name], 2)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(step_seconds(model, ids, optimizers[name], args.steps))
    reference = statistics.median(times[default])
    print(f"threads {torch.get_num_threads()}, batch 32 x {args.seq_len} tokens, median of {args.repeats} x "
          f"{args.steps} steps")
    print("| variant | ms / step | time vs SMT default |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.0f} | {median / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
