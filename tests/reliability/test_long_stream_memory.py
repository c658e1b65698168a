"""Streaming 20K tokens through a tiny StrideHybridModel (model.step, then chunked forward calls
of uneven sizes) keeps the process memory flat, the carried state at a fixed size, and every
output finite."""

from __future__ import annotations

import gc
import mmap
import os

import pytest
import torch

from smt.config import StrideHybridConfig
from smt.models.stride_hybrid import StrideHybridModel

TOTAL_TOKENS, STEP_TOKENS, WARMUP_TOKENS = 20_000, 1_000, 2_000
CHUNK_SIZES = (128, 37, 5, 200, 64)  # uneven, so chunk ends fall at every phase of the stride
MAX_GROWTH_BYTES = 20 * 2**20
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """The current resident set size of this process (not the peak)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def _shapes(state) -> dict[str, tuple]:
    return {name: tuple(value.shape) for name, value in state.buffers.items()}


def _stream(model, ids: torch.Tensor, samples: list[tuple[int, int]]):
    """Feed `ids` (B, T) as one stream; sample (tokens fed, RSS) about every 1K tokens."""
    state = model.init_state(ids.shape[0])
    size, shapes = state.nbytes(), _shapes(state)
    fed, next_sample, chunk_index = 0, 0, 0
    while fed < ids.shape[1]:
        if fed < STEP_TOKENS:
            logits, state = model.step(ids[:, fed], state)
            fed += 1
        else:
            chunk = ids[:, fed:fed + CHUNK_SIZES[chunk_index % len(CHUNK_SIZES)]]
            logits, aux = model(chunk, state=state)
            state = aux["state"]
            fed += chunk.shape[1]
            chunk_index += 1
        assert torch.isfinite(logits).all(), f"non-finite logits after {fed} tokens"
        assert state.nbytes() == size and _shapes(state) == shapes, f"the state changed size after {fed} tokens"
        if fed >= next_sample:
            gc.collect()
            samples.append((fed, resident_bytes()))
            next_sample += 1_000
    assert int(state.position[0]) == ids.shape[1]
    return state


def test_rss_probe_sees_a_20mb_allocation():
    before = resident_bytes()
    # 64 MiB of fresh pages, mapped here and touched: not malloc's, whose freed heap may already be
    # resident (a trainer test keeps freed memory in this process, smt.training.host_memory)
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\x01" * len(block))
    assert resident_bytes() - before > MAX_GROWTH_BYTES
    block.close()


@pytest.mark.slow
def test_20k_token_stream_keeps_memory_and_state_flat():
    torch.manual_seed(0)
    model = StrideHybridModel(StrideHybridConfig.tiny()).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, TOTAL_TOKENS), generator=torch.Generator().manual_seed(1))
    samples: list[tuple[int, int]] = []
    with torch.no_grad():
        state = _stream(model, ids, samples)
    assert all(torch.isfinite(v).all() for v in state.buffers.values() if v.is_floating_point())
    baseline = next(rss for fed, rss in samples if fed >= WARMUP_TOKENS)
    later = [rss for fed, rss in samples if fed > WARMUP_TOKENS]
    assert len(later) >= 15
    growth = max(later) - baseline
    assert growth < MAX_GROWTH_BYTES, [(fed, round(rss / 2**20, 1)) for fed, rss in samples]
