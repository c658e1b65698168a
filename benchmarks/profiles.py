"""Where a training step's time goes: torch.profiler tables of one step, and SMT's step split into
its parts by difference (`split_step`): SMT, SMT with its write path's outputs fixed (computed once,
then fed back as constants, so the step has no write path to run or differentiate), and SWA, timed
in turns. SMT - fixed is the write path; fixed - SWA is the transformer carrying the slots. The
profiler's own per-op times are inflated where a step allocates much (every op's time includes its
page faults under the profiler's bookkeeping), so the split is the one to trust for totals.

    OMP_NUM_THREADS=2 python -m benchmarks.profiles --split --batch 8 --dtype bfloat16

`--count-ops ARCH ...` counts the ATen ops of one training step instead (`count_ops`): the kernel
launches a CUDA device would see, which is what the compiled scans remove from the write path:

    OMP_NUM_THREADS=2 python -m benchmarks.profiles --count-ops smt smt-scan-ref swa --size default --context 4096
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import markdown_table, time_in_turns
from benchmarks.training import build_arch, make_train_step
from smt.training.host_memory import keep_freed_memory


def profile_train_step(arch: str = "smt", context: int = 4096, dtype: str = "float32", size: str = "small",
                       device: str = "cpu", rows: int = 15) -> str:
    """The top operators by self time of one training step (after one warmup step)."""
    torch.manual_seed(0)
    model = build_arch(arch, size, device)
    ids = torch.randint(0, model.config.vocab_size, (1, context + 1), device=device)
    step = make_train_step(model, ids, dtype, arch)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def _fix_write_path(model) -> None:
    """Replace model.memory.write by its first call's result, detached (the slots a fresh leaf each call)."""
    from dataclasses import replace

    real, kept = model.memory.write, {}

    def fixed(x, layout, state, slot_offsets=None):
        if not kept:
            with torch.no_grad():
                result = real(x, layout, state, slot_offsets)
            kept["result"] = replace(
                result, slots=result.slots.detach(), weights=result.weights.detach(),
                state={name: value.detach() for name, value in result.state.items()},
                gates=None if result.gates is None else result.gates.detach(),
                write_states=None if result.write_states is None else result.write_states.detach())
        return replace(kept["result"], slots=kept["result"].slots.clone().requires_grad_())

    model.memory.write = fixed


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


class _OpCounter(TorchDispatchMode):
    """Counts the ATen ops that compute (views excluded): on a CUDA device each launches at least one kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def count_ops(archs=("smt", "smt-scan-ref", "swa"), context: int = 4096, size: str = "small", device: str = "cpu",
              batch: int = 1) -> list[dict]:
    """ATen ops per training step (forward, backward, AdamW; after one untimed step) of each arch. A compiled
    scan (the C loop here, the Triton kernels on CUDA) counts as no op, so `smt` against `smt-scan-ref` is
    what the compiled scans save in launches. Counted on `device`; on CUDA the Triton path adds a few ops
    around each kernel (the sums of its per-block partials), so CPU counts carry over roughly."""
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model = build_arch(arch, size, device)
        ids = torch.randint(0, model.config.vocab_size, (batch, context + 1), device=device)
        step = make_train_step(model, ids, "float32", arch)
        step()
        with _OpCounter() as counter:
            step()
        rows.append({"arch": arch, "size": size, "context": context, "ops_per_step": counter.ops})
        del model, step
    return rows


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
    parser.add_argument("--count-ops", nargs="+", metavar="ARCH", default=None,
                        help="ATen ops per training step of these archs (count_ops)")
    args = parser.parse_args(argv)
    if args.count_ops:
        rows = count_ops(args.count_ops, args.context, args.size, args.device, args.batch)
        print(markdown_table(rows, ["arch", "size", "context", "ops_per_step"]))
    elif args.split:
        rows = split_step(args.context, args.dtype, args.batch, args.size, args.device, args.repeats)
        print(markdown_table(rows, ["part", "seconds"]))
    else:
        print(profile_train_step(args.arch, args.context, args.dtype, args.size, args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
