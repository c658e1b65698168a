"""One registry for the memory's recurrences: per op a reference and the implementations registered
beside it, and one function that chooses among them.

An op is a recurrence with one signature (`gated_scan`, `selective_scan`, `gated_window`, `linear_scan`,
`mamba_mixer`; `smt.models.components.scan` and `ssm` register them, `python -m smt.kernels` lists
them). Every op has an implementation named "reference" (the definition the others are tested
against). The others say where they run (devices), what inputs they take (dtypes), whether they can
run in this process (`available`: a library built, a package installed) and from which problem size
on they are worth choosing (`min_size`, per device; what size measures is the op's `size`).

`choose(op, x, size)` takes the first implementation, in registration order, that fits x's device and
dtype, the size and this process, else the reference. One override narrows the choice for every op:
`with kernels.use("reference"):` (or `use("fused")`, or several names), or the environment variable
`SMT_KERNELS=reference` (names separated by commas); an op with none of the named implementations
runs its reference. `SMT_NATIVE=0` (the older switch) still works: it leaves out the "native" ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from smt import native

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REFERENCE = "reference"


def _always() -> bool:
    return True


def _never() -> bool:
    return False


@dataclass
class Kernel:
    """One implementation of an op. `fn` takes the op's arguments. `emulated_on_cpu` says whether it can
    run CPU tensors under an emulator (Triton's interpreter): only when named in the override, for tests."""

    op: str
    name: str
    fn: Callable
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = FLOATS
    available: Callable[[], bool] = _always
    min_size: Mapping[str, float] = field(default_factory=dict)
    emulated_on_cpu: Callable[[], bool] = _never
    about: str = ""

    def runs_on(self, device: str, named: bool = False) -> bool:
        """Whether this implementation takes tensors on `device` (named: asked for by the override)."""
        if device in self.devices:
            return True
        return named and device == "cpu" and self.emulated_on_cpu()


@dataclass
class Op:
    name: str
    size: str  # what `choose`'s size measures for this op
    about: str
    kernels: list[Kernel] = field(default_factory=list)  # in order of preference, the reference last


_OPS: dict[str, Op] = {}
_OVERRIDES: list[tuple[str, ...]] = []  # the `use` blocks entered, innermost last


def define(name: str, reference: Callable, size: str, about: str) -> Op:
    """Defines an op by its reference (which runs on every device and dtype)."""
    op = Op(name, size, about)
    op.kernels.append(Kernel(name, REFERENCE, reference, about="the definition"))
    _OPS[name] = op
    return op


def register(kernel: Kernel) -> Kernel:
    """Adds an implementation to its op, preferred after those registered before it."""
    op = _OPS[kernel.op]
    if any(k.name == kernel.name for k in op.kernels):
        raise ValueError(f"{kernel.op} already has an implementation named {kernel.name!r}")
    op.kernels.insert(len(op.kernels) - 1, kernel)
    return kernel


def ops() -> list[str]:
    return list(_OPS)


def op(name: str) -> Op:
    if name not in _OPS:
        raise KeyError(f"no op {name!r}; registered: {', '.join(_OPS) or 'none (import smt.models first)'}")
    return _OPS[name]


def implementations(name: str) -> list[Kernel]:
    """The op's implementations in order of preference, the reference last."""
    return list(op(name).kernels)


def get(name: str, implementation: str) -> Kernel:
    for kernel in op(name).kernels:
        if kernel.name == implementation:
            return kernel
    raise KeyError(f"{name} has no implementation {implementation!r}")


def reference(name: str) -> Kernel:
    return op(name).kernels[-1]


@contextmanager
def use(*names: str) -> Iterator[None]:
    """Within the block every op runs the first of its implementations with one of these names that
    fits the call, else its reference: `with kernels.use("reference"):` runs the definitions."""
    _OVERRIDES.append(names)
    try:
        yield
    finally:
        _OVERRIDES.pop()


def named() -> tuple[str, ...] | None:
    """The implementation names the override allows (the innermost `use`, else SMT_KERNELS), or None."""
    if _OVERRIDES:
        return _OVERRIDES[-1]
    listed = os.environ.get("SMT_KERNELS", "").strip()
    return tuple(name.strip() for name in listed.split(",") if name.strip()) or None


def left_out() -> tuple[str, ...]:
    """Names the environment turns off: SMT_NATIVE=0 (the older switch) leaves out "native"."""
    return () if native.enabled() else ("native",)


def usable(kernel: Kernel, device: str, dtype: torch.dtype, size: float = 0) -> bool:
    """Whether `choose` may take this implementation for such a call, the override aside."""
    allowed = named()
    is_named = allowed is not None and kernel.name in allowed
    return (kernel.runs_on(device, is_named) and dtype in kernel.dtypes and size >= kernel.min_size.get(device, 0)
            and kernel.name not in left_out() and kernel.available())


def choose(name: str, x: Tensor, size: float = 0) -> Kernel:
    """The implementation of op `name` that runs for inputs like x (its device and dtype) of this size."""
    allowed = named()
    for kernel in op(name).kernels[:-1]:
        if allowed is not None and kernel.name not in allowed:
            continue
        if usable(kernel, x.device.type, x.dtype, size):
            return kernel
    return op(name).kernels[-1]
