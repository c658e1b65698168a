#!/usr/bin/env python
"""Training-step time of the memory variants of docs/MEMORY.md, as ratios to the default SMT.

One process, the variants timed in turns (so machine noise hits all alike), fp32, AdamW step
included, on the recall experiments' shape (the tiny preset, batch 32 x 64 tokens) or, with
--shape text, on the text regime's (configs/experiments/text_smt.yaml: d = 128, batch 4 x 512).

    python experiments/memory_variant_speed.py [--repeats 5] [--steps 10] [--only token_rate read]
    python experiments/memory_variant_speed.py --shape text --repeats 3 --steps 3 --only token_rate

--only keeps the default, SWA and the variants whose names contain one of the given words.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from smt import StrideHybridConfig
from smt.models.baselines import build_model, matched_baseline

VARIANTS = {
    "SMT default (memory: gated_tokens, hard write gates)": {},
    "the seed's design (memory: slot_feedback, ungated)": {"memory": "slot_feedback", "write_gate": False},
    "memory: token_rate (every token into the SSM and read)": {"memory": "token_rate"},
    "token_rate, 3 attention + 4 Mamba layers": {"memory": "token_rate", "transformer_n_layers": 3, "ssm_n_layers": 4},
    "per-token read of the SSM state (memory_read: slots+state)": {"memory_read": "slots+state"},
    "per-token read, S = 2": {"memory_read": "slots+state", "stride": 2},
    "ungated writes (write_gate: false)": {"write_gate": False},
    "SimpleSSM memory": {"ssm_type": "simple"},
    "Mamba's dt range [1e-3, 1e-1]": {"ssm_dt_min": 1e-3, "ssm_dt_max": 0.1},
    "mimetic init": {"ssm_init": "mimetic"},
    "pooling position bias": {"pool_position_bias": True},
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
    parser.add_argument("--shape", choices=("tiny", "text"), default="tiny")
    args = parser.parse_args(argv)
    default = next(iter(VARIANTS))
    variants = {name: overrides for name, overrides in VARIANTS.items()
                if args.only is None or name == default or any(word in name for word in args.only)}
    torch.manual_seed(0)
    if args.shape == "text":
        text = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "text_smt.yaml"
        base, batch, length, vocab = StrideHybridConfig(**yaml.safe_load(text.read_text())["model"]), 4, 512, 4096
    else:
        base, batch, length, vocab = StrideHybridConfig.tiny(vocab_size=26), 32, args.seq_len, 26
    models = {name: build_model(base.replace(**overrides)) for name, overrides in variants.items()}
    models["SWA (matched, no memory)"] = build_model(matched_baseline(base, "swa"))
    optimizers = {name: torch.optim.AdamW(m.parameters(), 1e-3) for name, m in models.items()}
    ids = torch.randint(0, vocab, (batch, length))
    for name, model in models.items():  # warm-up
        step_seconds(model, ids, optimizers[name], 2)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(step_seconds(model, ids, optimizers[name], args.steps))
    reference = statistics.median(times[default])
    print(f"threads {torch.get_num_threads()}, {args.shape} shape, batch {batch} x {length} tokens, "
          f"median of {args.repeats} x {args.steps} steps")
    print("| variant | ms / step | time vs SMT default |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1000 * median:.0f} | {median / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
