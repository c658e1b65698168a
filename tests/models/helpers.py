"""Small models shared by the model tests."""

from __future__ import annotations

import torch

from smt import StrideHybridConfig, StrideHybridModel


def seed_design(**overrides) -> dict:
    """Overrides for the seed's design (pooling over memory slots + tokens, ungated writes; the default
    before docs/notebook/Q17-one-penalty-passkey-and-books.md), with the fields a variant sets kept."""
    overrides = StrideHybridConfig.canonical_names(overrides)  # an old pool_over_memory: the memory it names
    return {"memory": "slot_feedback", "write_gate": False, **overrides}


def tiny_model(randomise_position_bias: bool = False, **overrides) -> StrideHybridModel:
    """randomise_position_bias: the pooling's position bias starts at zero, where a window laid out
    in the wrong order would go unnoticed; random values make every position count. It also spreads
    the write gates (if any) over (0, 1), which start near one value."""
    torch.manual_seed(0)
    model = StrideHybridModel(StrideHybridConfig.tiny(**overrides)).eval()
    bias = getattr(getattr(model, "pooling", None), "position_bias", None)
    if randomise_position_bias and bias is not None:
        with torch.no_grad():
            bias.normal_()
    gate = getattr(getattr(model, "pooling", None), "gate", None)
    if randomise_position_bias and gate is not None:
        with torch.no_grad():
            gate.weight.normal_(std=10.0)
            gate.bias.zero_()
    return model


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
