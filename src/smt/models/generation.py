"""Sampling and the generation loop shared by SMT and the baselines.

Any model with `forward(input_ids, state=...) -> (logits, aux)` where aux["state"] is the state
to continue from can generate: the prompt runs in one parallel call, then one token per call.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_generation_args(max_new_tokens: int, temperature: float, top_k: int | None,
                          top_p: float | None) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not temperature >= 0 or temperature != temperature or temperature == float("inf"):
        raise ValueError(f"temperature={temperature!r} must be finite and >= 0 (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be None or an integer >= 1")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p={top_p!r} must be None or in (0, 1]")


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Next token ids (B,) from logits (B, V). temperature 0 is greedy (argmax)."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the model produced NaN/inf logits, so there is nothing to sample from: its weights "
                         "(or the stream state) hold NaN/inf, e.g. a diverged training run; load an earlier "
                         "checkpoint")
    logits = logits.double()  # float64 so that a temperature like 1e-200 stays representable
    if temperature == 0:
        return logits.argmax(-1)
    # subtract the max first: a tiny temperature then sends the others to -inf, never inf - inf
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the top one stays)
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    input_ids: Tensor,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    stop_token_ids: list[int] | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    state=None,
    return_state: bool = False,
):
    """Continue `input_ids` (B, T) by up to `max_new_tokens` tokens.

    Rows that emit `eos_token_id` or a stop token are finished: they are padded with that
    token while the others go on, and generation ends early when every row is finished.
    `seed` (or a `generator`) makes sampling reproducible.
    """
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    if generator is None and seed is not None:
        generator = torch.Generator(device=input_ids.device if isinstance(input_ids, Tensor) else "cpu")
        generator.manual_seed(seed)
    stops = set(stop_token_ids or [])
    if eos_token_id is not None:
        stops.add(eos_token_id)
    was_training = model.training
    model.eval()
    try:
        logits, aux = model(input_ids, state=state)
        state = aux["state"]
        tokens = [input_ids]
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        pad = torch.zeros_like(finished, dtype=input_ids.dtype)
        last = logits[:, -1]
        for i in range(max_new_tokens):
            nxt = sample_next(last, temperature, top_k, top_p, generator).to(input_ids.dtype)
            nxt = torch.where(finished, pad, nxt)
            tokens.append(nxt[:, None])
            if stops:
                hit = torch.zeros_like(finished)
                for s in stops:
                    hit |= nxt == s
                pad = torch.where(hit & ~finished, nxt, pad)
                finished |= hit
            done = bool(finished.all()) if stops else False
            if return_state or (i + 1 < max_new_tokens and not done):
                logits, aux = model(nxt[:, None], state=state)  # the returned state covers every token
                state = aux["state"]
                last = logits[:, -1]
            if done:
                break
    finally:
        model.train(was_training)
    out = torch.cat(tokens, dim=1)
    return (out, state) if return_state else out


class StreamingGeneration:
    """`step` and `generate` for any model whose forward(ids, state) returns (logits, aux["state"])."""

    def step(self, token_ids: Tensor, state=None):
        """Feed one token per stream: token_ids (B,) or (B, 1) -> logits (B, vocab), new state."""
        if isinstance(token_ids, Tensor) and token_ids.dim() == 1:
            token_ids = token_ids[:, None]
        if isinstance(token_ids, Tensor) and token_ids.dim() == 2 and token_ids.shape[1] != 1:
            raise ValueError(f"step takes one token per stream, got shape {tuple(token_ids.shape)}; use forward")
        logits, aux = self(token_ids, state=state)
        return logits[:, -1], aux["state"]

    def generate(self, input_ids: Tensor, max_new_tokens: int = 50, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
                 stop_token_ids: list[int] | None = None, generator: torch.Generator | None = None,
                 seed: int | None = None, state=None, return_state: bool = False):
        """Sample a continuation of input_ids (B, T); see `generate` in this module."""
        return generate(self, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id,
                        stop_token_ids, generator, seed, state, return_state)
