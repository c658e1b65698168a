"""Where a training step's time goes: torch.profiler tables of one step, and SMT's step split into
its parts by difference (`split_step`): SMT, SMT with its write path's outputs fixed (computed once,
then fed back as constants, so the step has no write path to run or differentiate), and SWA, timed
in turns. SMT - fixed is the write path; fixed - SWA is the transformer carrying the slots. The
profiler's own per-op times are inflated where a step allocates much (every op's time includes its
page faults under the profiler's bookkeeping), so the split is the one to trust for totals.

    OMP_NUM_THREADS=2 python -m benchmarks.profiles --split --batch 8 --dtype bfloat16
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import markdown_table, time_in_turns
from benchmarks.training import build_arch, make_train_step
from smt.training.host_memory import keep_freed_memory


def profile_train_step(arch: str = "smt", context: int = 4096, dtype: str = "float32", size: str = "small",
                       device: str = "cpu", rows: int = 15) -> str:
    """The top operators by self time of one training step (after one warmup step)."""
    torch.manual_seed(0)
    model = build_arch(arch, size, device)
    ids = torch.randint(0, model.config.vocab_size, (1, context + 1), device=device)
    step = make_train_step(model, ids, dtype)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def _fix_write_path(model) -> None:
    """Replace model._write by its first call's outputs, detached (the slots as a fresh leaf each call)."""
    real, kept = model._write, {}

    def fixed(x, buffers, new_buffers, layout):
        if not kept:
            with torch.no_grad():
                outputs = real(x, buffers, new_buffers, layout)
            kept["outputs"] = [o.detach() if torch.is_tensor(o) else o for o in outputs]
            kept["buffers"] = {name: value.detach() for name, value in new_buffers.items()}
        new_buffers.update(kept["buffers"])
        slots, *rest = kept["outputs"]
        return (slots.clone().requires_grad_(), *rest)

    model._write = fixed


def split_step(context: int = 4096, dtype: str = "float32", batch: int = 1, size: str = "small",
               device: str = "cpu", repeats: int = 3) -> list[dict]:
    """Median step time of SMT, of SMT with its write path fixed, and of SWA, timed in turns."""
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    steps = {}
    for name, arch in (("smt", "smt"), ("smt, write path fixed", "smt"), ("swa", "swa")):
        torch.manual_seed(0)
        model = build_arch(arch, size, device)
        if name != arch:
            _fix_write_path(model)
        ids = torch.randint(0, model.config.vocab_size, (batch, context + 1), device=device)
        steps[name] = make_train_step(model, ids, dtype)
    medians = {name: m.timing.median for name, m in time_in_turns(steps, device, 1, repeats).items()}
    return [{"part": "write path (smt - fixed)", "seconds": medians["smt"] - medians["smt, write path fixed"]},
            {"part": "slots in the transformer (fixed - swa)",
             "seconds": medians["smt, write path fixed"] - medians["swa"]},
            *({"part": f"step: {name}", "seconds": value} for name, value in medians.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="smt")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--split", action="store_true", help="SMT's step split into its parts (split_step)")
    parser.add_argument("--batch", type=int, default=1, help="rows per step (--split)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (--split)")
    args = parser.parse_args(argv)
    if args.split:
        rows = split_step(args.context, args.dtype, args.batch, args.size, args.device, args.repeats)
        print(markdown_table(rows, ["part", "seconds"]))
    else:
        print(profile_train_step(args.arch, args.context, args.dtype, args.size, args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
