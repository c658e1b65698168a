"""Shared pieces of the benchmarks: the benchmark model shape, timing, machine info, tables."""

from __future__ import annotations

import contextlib
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from smt.config import StrideHybridConfig
from smt.models.stride_hybrid import StrideHybridModel

DTYPES = ("float32", "bfloat16")


def bench_config(size: str = "small", device: str = "cpu", **overrides) -> StrideHybridConfig:
    """The model shape every benchmark uses.

    small: the CPU benchmark shape (d=256, 4 layers of 4 heads, a 4-layer Mamba memory, the
    WikiText-103 window N=15 M=50 S=16, an 8K vocabulary). toy: seconds-long smoke tests. default: the
    default 216M config (`StrideHybridConfig.wikitext103()`, d=768, 12 + 24 layers, vocab 50,280), the
    shape of issue 16's GPU targets.
    """
    if size == "default":
        return StrideHybridConfig.wikitext103(**{"device": device, **overrides})
    if size == "small":
        base = dict(n_ssm_outputs=15, m_input_tokens=50, stride=16, vocab_size=8192, d_model=256,
                    transformer_n_layers=4, n_heads=4, ssm_n_layers=4)
    elif size == "toy":
        base = dict(n_ssm_outputs=4, m_input_tokens=8, stride=4, vocab_size=256, d_model=64,
                    transformer_n_layers=2, n_heads=4, ssm_n_layers=2, ssm_d_state=8)
    else:
        raise ValueError(f"unknown benchmark size {size!r}; use 'small', 'toy' or 'default'")
    return StrideHybridConfig(**{**base, "device": device, **overrides})


def build(config: StrideHybridConfig) -> nn.Module:
    """SMT and the sliding-window baseline share a class; the other baselines come from build_model."""
    if config.arch in ("smt", "swa"):
        return StrideHybridModel(config)
    from smt.models.baselines import build_model

    return build_model(config)


def autocast(dtype: str, device: torch.device | str):
    """Mixed precision for bf16 (fp32 master weights, bf16 matmuls); nothing for fp32."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown benchmark dtype {dtype!r}; use one of {list(DTYPES)}")
    device_type = torch.device(device).type
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    median: float
    minimum: float
    samples: list[float]


def time_call(fn: Callable[[], object], device: torch.device | str, warmup: int = 1, repeats: int = 3) -> Timing:
    """Median and minimum wall time (s) of fn() over `repeats` runs after `warmup` runs."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need at least one timed run")
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), min(samples), samples)


@dataclass
class TurnTiming:
    timing: Timing
    page_faults: float  # median minor page faults of one call (this process's)


def time_in_turns(calls: dict[str, Callable[[], object]], device: torch.device | str, warmup: int = 1,
                  repeats: int = 3) -> dict[str, TurnTiming]:
    """Each call timed once per round, `repeats` rounds after `warmup` rounds, so that a slow phase of
    a shared machine slows every call alike instead of skewing their ratios."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need at least one timed round")
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    faults: dict[str, list[int]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            seconds[name].append(time_call(fn, device, warmup=0, repeats=1).median)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {name: TurnTiming(Timing(statistics.median(s), min(s), s), statistics.median(faults[name]))
            for name, s in seconds.items()}


def state_nbytes(state) -> int:
    """Bytes of a streaming state or KV cache (anything with nbytes(), or nested tensors)."""
    if hasattr(state, "nbytes") and callable(state.nbytes):
        return int(state.nbytes())
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    if hasattr(state, "__dict__"):
        return sum(state_nbytes(v) for v in vars(state).values())
    return 0


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = [f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f"))]
    return " ".join(sorted(wanted)) or "none of amx/avx512"


def machine_info(device: torch.device | str) -> dict:
    info = {
        "cpu": _lscpu_model(),
        "cpu_flags": _cpu_flags(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of the given columns; floats get 3 significant digits."""
    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, bool):
            return "yes" if value else "NO"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
