"""`python -m smt.kernels`: what is registered per op, and what would run here (per device and dtype)."""

from __future__ import annotations

import sys

import torch

from smt import kernels

DTYPES = (torch.float32, torch.bfloat16)
LARGE = float(1 << 40)


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _sizes(kernel: kernels.Kernel) -> str:
    return ", ".join(f"{device} >= {size:g}" for device, size in kernel.min_size.items()) or "any"


def _would_run(name: str, device: str, dtype: torch.dtype) -> str:
    x = torch.empty(0, device=device, dtype=dtype)
    small, large = kernels.choose(name, x, 0).name, kernels.choose(name, x, LARGE).name
    return small if small == large else f"{small} for small sizes, {large} for large ones"


def describe(name: str, devices: list[str]) -> list[str]:
    op = kernels.op(name)
    lines = [f"{name}: {op.about}", f"  size: {op.size}"]
    for kernel in op.kernels:
        here = "yes" if kernel.available() else "no"
        lines.append(f"  {kernel.name:10s} devices {'/'.join(kernel.devices):8s} dtypes "
                     f"{' '.join(_dtype(d) for d in kernel.dtypes):34s} size {_sizes(kernel):22s} "
                     f"available {here:3s}  {kernel.about}")
    for device in devices:
        for dtype in DTYPES:
            lines.append(f"  runs here on {device} {_dtype(dtype)}: {_would_run(name, device, dtype)}")
    return lines


def main() -> int:
    import smt.models  # noqa: F401  (registers the implementations)

    override = kernels.named()
    left_out = kernels.left_out()
    print(f"smt.kernels: override {', '.join(override) if override else 'none'} (kernels.use(...) or "
          f"SMT_KERNELS=name,...)" + (f"; left out: {', '.join(left_out)} (SMT_NATIVE=0)" if left_out else ""))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in kernels.ops():
        print("\n".join(["", *describe(name, devices)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
