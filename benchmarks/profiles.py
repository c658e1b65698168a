"""torch.profiler tables of one training step, to show where the time goes."""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import build
from benchmarks.training import arch_config, make_train_step


def profile_train_step(arch: str = "smt", context: int = 4096, dtype: str = "float32", size: str = "small",
                       device: str = "cpu", rows: int = 15) -> str:
    """The top operators by self time of one training step (after one warmup step)."""
    torch.manual_seed(0)
    config = arch_config(arch, size, device)
    model = build(config).train()
    ids = torch.randint(0, config.vocab_size, (1, context + 1), device=device)
    step = make_train_step(model, ids, dtype)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="smt")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", default="small")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(profile_train_step(args.arch, args.context, args.dtype, args.size, args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
