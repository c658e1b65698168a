"""The Mamba block alone: sequence mode vs a per-timestep loop, forward + backward.

modes
  sequence       MambaStack.forward with the fused scan (one in-place update per timestep, a
                 hand-written backward: smt.models.components.scan._FusedSelectiveScan)
  sequence-loop  MambaStack.forward with the reference scan (a Python loop over the scan only)
  step-loop      a Python loop calling MambaStack.step once per timestep (the plain reference)
and the latency of one no-grad step (generation).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import autocast, markdown_table, time_call
from smt.models.components.ssm import MambaStack

TARGET = 10.0  # sequence mode over the step loop, forward + backward at length 2K


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
        "sequence-loop": lambda: stack(x, reference=True)[0],
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


COLUMNS = ["dtype", "length", "mode", "fwd_bwd_s", "tokens_per_s", "speedup_vs_step_loop", "meets_target",
           "step_ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(markdown_table(run(args.length, args.d_model, device=args.device), COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
