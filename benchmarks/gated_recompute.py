"""The default memory's gated scan, recomputed in backward or kept: training step time, A/B in one process.

    python -m benchmarks.gated_recompute [--batch 8] [--context 4096] [--rounds 2]

`MambaMixer.forward_gated` runs `ssm.gated_scan` under `torch.utils.checkpoint` when gradients are
on. The baseline here swaps the checkpoint for a plain call (every (batch, writes, d_inner,
d_state) tensor kept for backward); the two alternate, one timed step after a warm-up each, and the
ratio is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch.utils.checkpoint

from benchmarks.training import build_step


@contextmanager
def kept_states() -> Iterator[None]:
    """The gated scan without recompute: the checkpoint becomes a plain call."""
    real = torch.utils.checkpoint.checkpoint
    torch.utils.checkpoint.checkpoint = lambda fn, *args, use_reentrant=False: fn(*args)
    try:
        yield
    finally:
        torch.utils.checkpoint.checkpoint = real


def time_step(batch: int, context: int, recompute: bool, size: str = "small") -> float:
    step = build_step("smt", context, "float32", size=size, batch=batch)
    with nullcontext() if recompute else kept_states():
        step()
        started = time.perf_counter()
        step()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for recompute in (True, False):
            times[recompute].append(time_step(args.batch, args.context, recompute))
    print("| scan | step s (each round) | median |\n|---|---|---|")
    for recompute, label in ((True, "recomputed (the default)"), (False, "kept for backward")):
        rounds = " / ".join(f"{t:.2f}" for t in times[recompute])
        print(f"| {label} | {rounds} | {statistics.median(times[recompute]):.2f} |")
    ratio = statistics.median(times[False]) / statistics.median(times[True])
    print(f"\nrecompute speedup: {ratio:.2f}x (batch {args.batch}, {args.context} tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
