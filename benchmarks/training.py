"""Training throughput: tokens/s of one forward + backward + AdamW step, SMT vs the baselines.

Every architecture gets the same transformer shape, batch, context and dtype, in one process; the
architectures of a cell are timed in turns.
`smt` is the library's default (pooling over the window's tokens only, hard write gates: one gated
scan per layer). `smt-seed` is the seed's design (pooling over memory slots + tokens, ungated: the
sequential write chain, run fused), `smt-loop` the same chain run as the plain autograd loop (the
fused chain's reference), `smt-tokpool` tokens-only pooling without gates (one plain scan),
`smt-scan-fused` the default with its recurrences run by PyTorch (`kernels.use("fused")`: `_FusedGatedScan`,
or the chunked reference for small states, instead of the native C loop), `smt-scan-ref` always through
the references (`kernels.use("reference")`).
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import torch

from benchmarks.common import TurnTiming, autocast, bench_config, build, markdown_table, time_in_turns
from benchmarks.flops import model_flops
from smt import kernels
from smt.training.host_memory import keep_freed_memory

# every step benchmark keeps freed memory in the process (smt.training.host_memory), as the trainer
# does on CPU; --release-freed-memory measures glibc's default instead
KEEP_FREED_MEMORY = True
ARCHS = ("smt", "smt-seed", "smt-loop", "smt-tokpool", "smt-scan-fused", "smt-scan-ref", "swa", "gpt")
SEED_DESIGN = {"pool_over_memory": True, "write_gate": False}
# the archs that are the default model with its recurrences narrowed to these implementations (smt.kernels)
ARCH_KERNELS = {"smt-scan-fused": ("fused",), "smt-scan-ref": ("reference",)}


# config fields set on every arch's model (--attention-block-size sets one)
CONFIG_OVERRIDES: dict = {}


def arch_config(arch: str, size: str, device: str):
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; use one of {list(ARCHS)}")
    if arch == "smt-tokpool":
        fields = {"pool_over_memory": False, "write_gate": False}
    elif arch in ("smt-seed", "smt-loop"):
        fields = SEED_DESIGN
    elif arch in ("smt-scan-fused", "smt-scan-ref"):
        fields = {}
    else:
        fields = {"arch": arch}
    return bench_config(size, device, **fields, **CONFIG_OVERRIDES)


def arch_kernels(arch: str):
    """The context the arch's steps run in: `kernels.use(...)` for the scan archs, else nothing."""
    names = ARCH_KERNELS.get(arch)
    return kernels.use(*names) if names else nullcontext()


def make_train_step(model, ids: torch.Tensor, dtype: str, arch: str = "smt"):
    """One optimizer step on next-token loss over ids (B, T + 1), through the fused head loss as the
    trainer computes it (`model(inputs, targets=...)`, no (tokens, vocab) logits formed), with the arch's
    kernels."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    device = ids.device

    def step() -> float:
        with arch_kernels(arch), autocast(dtype, device):
            _, aux = model(ids[:, :-1], targets=ids[:, 1:])
            loss = aux["nll_sum"] / ids[:, 1:].numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def build_arch(arch: str, size: str = "small", device: str = "cpu"):
    """A fresh model of `arch` in training mode, with the arch's code path selected (the scan archs'
    kernels are chosen in `make_train_step`)."""
    model = build(arch_config(arch, size, device)).train()
    if arch == "smt-loop":
        model.memory.fused = False
    return model


def build_step(arch: str, context: int, dtype: str, size: str = "small", device: str = "cpu", batch: int = 1,
               seed: int = 0):
    """A fresh model of `arch` and a function that runs one training step on random ids."""
    if torch.device(device).type == "cpu" and KEEP_FREED_MEMORY:
        keep_freed_memory()
    torch.manual_seed(seed)
    model = build_arch(arch, size, device)
    ids = torch.randint(0, model.config.vocab_size, (batch, context + 1), device=device)
    return make_train_step(model, ids, dtype, arch)


def _row(arch: str, context: int, dtype: str, batch: int, measured: TurnTiming) -> dict:
    median = measured.timing.median
    return {"arch": arch, "context": context, "dtype": dtype, "batch": batch, "step_s": median,
            "step_s_min": measured.timing.minimum, "tokens_per_s": batch * context / median,
            "page_faults_per_step": measured.page_faults}


def measure_cell(archs, context: int, dtype: str, size: str = "small", device: str = "cpu", batch: int = 1,
                 warmup: int = 1, repeats: int = 3) -> dict[str, dict]:
    """Every arch of one cell, timed in turns (one step of each per round), so that a slow phase of
    a shared machine slows every arch alike instead of skewing their ratios."""
    steps = {arch: build_step(arch, context, dtype, size, device, batch) for arch in archs}
    measured = time_in_turns(steps, device, warmup, repeats)
    return {arch: _row(arch, context, dtype, batch, measured[arch]) for arch in archs}


def run(contexts=(1024, 4096, 16384), dtypes=("float32", "bfloat16"), archs=ARCHS, size: str = "small",
        device: str = "cpu", repeats: int = 3, warmup: int = 1, batch: int = 1) -> list[dict]:
    """All (context, dtype, arch) cells, with ratios of SMT against each baseline in the same cell."""
    rows = []
    for dtype in dtypes:
        for context in contexts:
            cell = measure_cell(archs, context, dtype, size, device, batch, warmup, repeats)
            for row in cell.values():
                for base in ("gpt", "swa"):
                    if base in cell and row["arch"] != base:
                        row[f"speedup_vs_{base}"] = cell[base]["step_s"] / row["step_s"]
                row["flop_ceiling_vs_gpt"] = flop_ceiling(row["arch"], size, device, context)
                rows.append(row)
    return rows


def flop_ceiling(arch: str, size: str, device: str, context: int) -> float:
    """The speedup over full attention that equal FLOP efficiency would give: gpt FLOPs / arch FLOPs."""
    gpt = model_flops(arch_config("gpt", size, device), context)["total"]
    return gpt / model_flops(arch_config(arch, size, device), context)["total"]


FLOP_EFFICIENCY_TARGET = 0.85  # speedup over full attention / its FLOP ceiling (issue 16, target 2)


def swa_target(batch: int) -> float:
    """SMT's step at most this times the window-only model's (issue 16, target 1): 1.5x at batch 1,
    1.25x at batch 8 (and any batch above 1)."""
    return 1.5 if batch == 1 else 1.25


def with_targets(rows: list[dict]) -> list[dict]:
    """FLOP efficiency (speedup over full attention / its FLOP ceiling) of every row measured beside
    full attention, and for SMT whether it meets issue 16's targets 1 and 2."""
    for row in rows:
        if "speedup_vs_gpt" in row:
            row["flop_efficiency"] = row["speedup_vs_gpt"] / row["flop_ceiling_vs_gpt"]
        if row["arch"] != "smt":
            continue
        if "flop_efficiency" in row:
            row["meets_flop_efficiency"] = row["flop_efficiency"] >= FLOP_EFFICIENCY_TARGET
        if "speedup_vs_swa" in row:
            row["step_vs_swa"] = 1 / row["speedup_vs_swa"]
            row["target_vs_swa"] = f"<= {swa_target(row['batch'])}x"
            row["meets_vs_swa"] = row["step_vs_swa"] <= swa_target(row["batch"])
    return rows


COLUMNS = ["dtype", "context", "batch", "arch", "tokens_per_s", "step_s", "speedup_vs_gpt", "flop_ceiling_vs_gpt",
           "flop_efficiency", "meets_flop_efficiency", "step_vs_swa", "target_vs_swa", "meets_vs_swa",
           "page_faults_per_step"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--size", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="rows per step (the write chain serves all at once)")
    parser.add_argument("--release-freed-memory", action="store_true",
                        help="glibc's default: freed memory goes back to the OS (each step faults it in again)")
    parser.add_argument("--attention-block-size", type=int, default=None,
                        help="the chunked attention's query block for every model (default: the config's)")
    args = parser.parse_args(argv)
    global KEEP_FREED_MEMORY
    KEEP_FREED_MEMORY = not args.release_freed_memory
    CONFIG_OVERRIDES.clear()
    if args.attention_block_size is not None:
        CONFIG_OVERRIDES["attention_block_size"] = args.attention_block_size
    rows = with_targets(run(args.contexts, args.dtypes, args.archs, args.size, args.device, args.repeats,
                            batch=args.batch))
    print(markdown_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
