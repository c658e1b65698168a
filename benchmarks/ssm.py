"""The Mamba block alone: sequence mode vs a per-timestep loop, forward + backward.

modes
  sequence       MambaStack.forward with the scan `smt.kernels` chooses (the C loop on CPU, Triton on
                 CUDA, else the fused scan: one in-place update per timestep, a hand-written backward)
  sequence-loop  MambaStack.forward under kernels.use("reference") (a Python loop over the scan only)
  step-loop      a Python loop calling MambaStack.step once per timestep (the plain reference)
and the latency of one no-grad step (generation).

With --gated: the default memory's gated scan alone, forward + backward, timed in turns: native
(the gated scan's compiled implementation in `smt.kernels`: the C loop of `smt.native` on CPU, the Triton
kernels of `triton_scan` on CUDA), fused (PyTorch ops with a hand-written backward) and its chunked
autograd reference (`scan.gated_scan_reference`), at the
write counts and state sizes of the benchmark shape (256 writes, d_inner 512, d_state 16) and the toy
shape (1,024 writes, d_inner 128, d_state 8):

    OMP_NUM_THREADS=2 python -m benchmarks.ssm --gated
    python -m benchmarks.ssm --gated --device cuda
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import autocast, markdown_table, time_call, time_in_turns
from smt import kernels
from smt.models.components.scan import gated_scan_reference
from smt.models.components.ssm import MambaStack

TARGET = 10.0  # sequence mode over the step loop, forward + backward at length 2K


def reference_forward(stack: MambaStack, x: torch.Tensor) -> torch.Tensor:
    with kernels.use("reference"):
        return stack(x)[0]


def compiled_gated_scan(device: str) -> kernels.Kernel | None:
    """The gated scan's compiled implementation on device (C on CPU, Triton on CUDA), where there is one."""
    probe = torch.zeros(1, device=device)
    for name in ("native", "triton"):
        kernel = kernels.get("gated_scan", name)
        if kernels.usable(kernel, probe.device.type, probe.dtype):
            return kernel
    return None


def step_loop(stack: MambaStack, x: torch.Tensor) -> torch.Tensor:
    state = stack.init_state(x.shape[0], x.device)
    outputs = []
    for x_t in x.unbind(1):
        y, state = stack.step(x_t, state)
        outputs.append(y)
    return torch.stack(outputs, 1)


def run(length: int = 2048, d_model: int = 256, n_layers: int = 1, batch: int = 1,
        dtypes=("float32", "bfloat16"), device: str = "cpu", repeats: int = 3, loop_repeats: int = 1) -> list[dict]:
    torch.manual_seed(0)
    stack = MambaStack(d_model, n_layers).to(device)
    x = torch.randn(batch, length, d_model, device=device, requires_grad=True)
    modes = {
        "sequence": lambda: stack(x)[0],
        "sequence-loop": lambda: reference_forward(stack, x),
        "step-loop": lambda: step_loop(stack, x),
    }
    rows = []
    for dtype in dtypes:
        times = {}
        for mode, forward in modes.items():
            def train(forward=forward, dtype=dtype) -> None:
                with autocast(dtype, device):
                    out = forward()
                out.float().square().mean().backward()
                stack.zero_grad(set_to_none=True)
                x.grad = None

            n = loop_repeats if mode.endswith("loop") else repeats
            times[mode] = time_call(train, device, warmup=1 if n > 1 else 0, repeats=n).median
        state, x0 = stack.init_state(batch, device), x[:, 0].detach()
        with torch.inference_mode(), autocast(dtype, device):
            step_s = time_call(lambda: stack.step(x0, state), device, warmup=5, repeats=50).median  # noqa: B023
        for mode, seconds in times.items():
            row = {"dtype": dtype, "length": length, "mode": mode, "fwd_bwd_s": seconds,
                   "tokens_per_s": batch * length / seconds, "speedup_vs_step_loop": times["step-loop"] / seconds}
            if mode == "sequence":
                row["meets_target"] = row["speedup_vs_step_loop"] >= TARGET
                row["step_ms"] = step_s * 1e3
            rows.append(row)
    return rows


def gated_scan_rows(shapes=((8, 256, 512, 16), (1, 256, 512, 16), (1, 1024, 128, 8)), device: str = "cpu",
                    repeats: int = 5) -> list[dict]:
    """Median forward + backward seconds of the compiled ("native": C on CPU, Triton on CUDA) and fused gated
    scans and their reference, per (batch, writes, d_inner, d_state), timed in turns; gates half closed, half
    open. Without a compiled scan for the device its columns are None."""
    rows = []
    for batch, writes, d_inner, d_state in shapes:
        torch.manual_seed(0)
        leaves = [torch.randn(batch, writes, d_inner), torch.rand(batch, writes, d_inner) * 0.1,
                  -torch.rand(d_inner, d_state) - 0.5, torch.randn(batch, writes, d_state),
                  torch.randn(batch, writes, d_state), torch.ones(d_inner), torch.rand(batch, writes, 1).round()]
        leaves = [x.to(device).requires_grad_() for x in leaves]
        h0 = torch.zeros(batch, d_inner, d_state, device=device)
        paths = {"fused": kernels.get("gated_scan", "fused").fn, "reference": gated_scan_reference}
        compiled = compiled_gated_scan(device)
        if compiled is not None:
            paths = {"native": compiled.fn, **paths}
        calls = {}
        for name, scan_fn in paths.items():
            def train(scan_fn=scan_fn, leaves=leaves, h0=h0) -> None:
                y, last = scan_fn(*leaves, h0)[:2]
                (y.sum() + last.sum()).backward()

            calls[name] = train
        measured = {k: v.timing.median for k, v in time_in_turns(calls, device, warmup=1, repeats=repeats).items()}
        fastest = measured.get("native", measured["fused"])
        rows.append({"batch": batch, "writes": writes, "d_inner": d_inner, "d_state": d_state,
                     "native_s": measured.get("native"), "fused_s": measured["fused"],
                     "reference_s": measured["reference"], "fused_vs_native": measured["fused"] / fastest,
                     "reference_vs_native": measured["reference"] / fastest})
    return rows


GATED_COLUMNS = ["batch", "writes", "d_inner", "d_state", "native_s", "fused_s", "reference_s", "fused_vs_native",
                 "reference_vs_native"]
COLUMNS = ["dtype", "length", "mode", "fwd_bwd_s", "tokens_per_s", "speedup_vs_step_loop", "meets_target",
           "step_ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gated", action="store_true", help="the gated scan's paths timed in turns (gated_scan_rows)")
    args = parser.parse_args(argv)
    if args.gated:
        print(markdown_table(gated_scan_rows(device=args.device), GATED_COLUMNS))
        return 0
    print(markdown_table(run(args.length, args.d_model, device=args.device), COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
