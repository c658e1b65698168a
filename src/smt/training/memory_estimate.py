"""How much memory a training run needs at least, from its config alone, before anything is
allocated: the model is built on torch's meta device (shapes, no storage), so a config that could
never fit (`--vocab_size 1e12`, `--batch_size 1e9`, `--m_input_tokens 1000000`) is refused with
the amount instead of failing deep inside the allocator (or swapping for an hour).

The estimate is a lower bound: weights, gradients and the two AdamW moments in float32, one saved
activation of width d_model per layer and token, and the carried stream state. A real step needs
more; a run this refuses cannot run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

FLOAT32 = 4
ADAMW_COPIES = 4  # weights, gradients, exp_avg, exp_avg_sq
WARN_SHARE = 0.9  # of the memory available now


@dataclass(frozen=True)
class MemoryPart:
    what: str
    fields: str  # the settings that size it, named in the fix
    bytes: int


def estimate_training_memory(model_config, training_config) -> list[MemoryPart]:
    """The parts of a training run's memory (a lower bound), largest first."""
    from smt.models.baselines import build_model

    batch, seq_len = training_config.batch_size, training_config.seq_len
    with torch.device("meta"):
        model = build_model(model_config)
        state = model.init_state(batch) if hasattr(model, "init_state") else None
    parameters = sum(p.numel() for p in model.parameters())
    layers = ((model_config.transformer_n_layers if model_config.arch != "mamba" else 0)
              + (model_config.ssm_n_layers if model_config.has_memory or model_config.arch == "mamba" else 0))
    state_bytes = 0 if state is None else sum(t.numel() * t.element_size() for t in state.buffers.values())
    parts = [
        MemoryPart(f"{parameters:,} parameters with their gradients and AdamW moments",
                   "model.vocab_size, model.d_model and the layer counts", parameters * ADAMW_COPIES * FLOAT32),
        MemoryPart("activations", "training.batch_size and training.seq_len",
                   batch * seq_len * model_config.d_model * max(layers, 1) * FLOAT32),
        MemoryPart("the carried stream state", "model.m_input_tokens and training.batch_size", state_bytes),
    ]
    return sorted(parts, key=lambda part: part.bytes, reverse=True)


def device_memory(device: torch.device) -> tuple[int, int | None] | None:
    """(total, available now) bytes of the device's memory; None where unknown."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return total, free
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    return total, _available_host_memory()


def _available_host_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _gib(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"


def check_training_memory(model_config, training_config, device: torch.device) -> str | None:
    """Raise ValueError when the run cannot fit the device's memory; a warning line when it may
    not fit what is available now, else None."""
    memory = device_memory(device)
    if memory is None:
        return None
    total, available = memory
    parts = estimate_training_memory(model_config, training_config)
    needed = sum(part.bytes for part in parts)
    largest = parts[0]
    detail = f"at least {_gib(needed)} ({largest.what}: {_gib(largest.bytes)})"
    if needed > total:
        raise ValueError(f"this run needs {detail} but the {device.type} memory is {_gib(total)}; "
                         f"lower {largest.fields}")
    if available is not None and needed > WARN_SHARE * available:
        return (f"warning: this run needs {detail} and {_gib(available)} of {device.type} memory is free now; "
                f"it may fail or swap: lower {largest.fields}")
    return None
