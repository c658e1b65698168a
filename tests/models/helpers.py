"""Small models shared by the model tests."""

from __future__ import annotations

import torch

from smt import StrideHybridConfig, StrideHybridModel


def tiny_model(**overrides) -> StrideHybridModel:
    torch.manual_seed(0)
    return StrideHybridModel(StrideHybridConfig.tiny(**overrides)).eval()


def random_ids(batch: int, length: int, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)


def run_in_chunks(model, ids: torch.Tensor, cuts: list[int]):
    """Feed ids split at `cuts`, carrying the state; returns the concatenated logits and state."""
    state, outs = None, []
    bounds = [0, *cuts, ids.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        logits, aux = model(ids[:, a:b], state=state)
        state = aux["state"]
        outs.append(logits)
    return torch.cat(outs, 1), state
