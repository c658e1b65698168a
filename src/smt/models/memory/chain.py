"""The memory write chain: every S tokens, pool the window and step the SSM.

The chain is sequential when a write's pooling window holds the memory slots made by earlier
writes (the slot-feedback memory): the token half of every window (per-token scores and values) is
computed for all tokens at once and gathered per write; the loop only scores the one new slot per
write, takes a softmax over N + M numbers and steps the SSM (`loop_chain`; `fused_chain` is its
hand-differentiated form). With windows of tokens only (the gated tokens-only memory) all writes
are pooled at once and the SSM runs in sequence mode: `tokens_only_chain`, no loop at all.

Both take `ChainInputs` and return a `ChainResult`; asked to `record`, they also return the
`WriteRecord` of the writes (what the SSM took in and gave out, with the probes a diagnostic takes
gradients at). `write_chain_reference` builds every window explicitly and calls the pooling module on
it; it is the oracle the fast chains are tested against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from smt.models.components.attention_pooling import AttentionPooling
from smt.models.components.windowed_attention import sliding_blocks
from smt.models.memory.base import WriteRecord


@dataclass
class ChainResult:
    """What a chain of writes returns (its memory wraps it in a `WriteResult`)."""

    slots: Tensor  # (B, W, d) the new memory slot vectors, as they enter the transformer
    weights: Tensor  # (B, W, heads, N + M) pooling weights per write
    # (B, N, heads) pooling scores and (B, N, d) values of the latest N slots, for the next call; None
    # where the windows hold tokens only (tokens_only_chain)
    slot_scores: Tensor | None
    slot_values: Tensor | None
    ssm_state: dict[str, Tensor]
    # with keep_states: (B, W, d_inner, d_state) the last Mamba layer's scan state after each write
    read_states: Tensor | None = None
    gates: Tensor | None = None  # (B, W) float32 the write gates, with write_gate
    record: WriteRecord | None = None  # asked to record: the SSM's inputs and outputs per write


class ChainInputs(NamedTuple):
    """What every path of the chain takes; window (W, M) holds the index into
    the token_* tensors of every window position of every write. slot_scores / slot_values, the slot
    half of the windows, are None for a memory that pools tokens only (`tokens_only_chain`)."""

    pooling: AttentionPooling
    ssm: nn.Module
    memory_proj: nn.Linear
    slot_offsets: Tensor | None
    token_scores: Tensor
    token_values: Tensor
    token_valid: Tensor
    window: Tensor
    slot_scores: Tensor | None
    slot_values: Tensor | None
    slot_valid: Tensor
    ssm_state: dict[str, Tensor]

    def windows(self, regular: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The token half of every write's window: scores (B, W, M, heads), values, validity. With
        regular = (start, step), window w starting at token key start + step w (what `window` holds),
        scores and values are sliding views rather than a gather, whose backward is a scatter-add."""
        valid = self.token_valid[:, self.window]
        if regular is None:
            return self.token_scores[:, self.window], self.token_values[:, self.window], valid
        start, step = regular
        W, M = self.window.shape

        def blocks(x: Tensor) -> Tensor:  # (B, L, f) -> (B, W, M, f)
            return sliding_blocks(x[:, start:].unsqueeze(1), M, step, W).squeeze(1)

        return blocks(self.token_scores), blocks(self.token_values), valid

    def to_slot(self, ssm_out: Tensor, w: int | None) -> Tensor:
        """A write's slot: the memory projection of the SSM output (+ its learned position)."""
        slot = self.memory_proj(ssm_out)
        if self.slot_offsets is not None:
            slot = slot + (self.slot_offsets if w is None else self.slot_offsets[:, w])
        return slot


def ssm_steps(ssm: nn.Module, pooled: Tensor, state: dict, gate: Tensor | None = None) -> tuple[Tensor, dict]:
    """One write into the SSM: pooled (B, d) is one step. Returns its output and the state after it.
    With a gate (B,) the state after the write is g * (the state the step produces) + (1 - g) * (the
    state before); the output is the step's."""
    before = state
    out, state = ssm.step(pooled, state)
    if gate is not None:
        state = {name: torch.lerp(before[name].float(), value.float(), gate.view(-1, *[1] * (value.dim() - 1)))
                 for name, value in state.items()}
    return out, state


def probe(x: Tensor, writes: int | None = None) -> Tensor:
    """Zeros like x, or like one of `writes` steps x (B, d) -> (B, writes, d), that require grad: added
    where a recorded chain's SSM takes its input or gives its output, they leave every value as it
    was (`WriteRecord`)."""
    shape = x.shape if writes is None else (x.shape[0], writes, *x.shape[1:])
    return torch.zeros(shape, dtype=x.dtype, device=x.device, requires_grad=True)


def tokens_only_chain(c: ChainInputs, keep_states: bool = False,
                      regular: tuple[int, int] | None = None, record: bool = False) -> ChainResult:
    """pool_over_memory=False: the windows hold tokens only, so every write is pooled at once and
    the SSM runs in sequence mode (no loop); `regular` as in `ChainInputs.windows`. keep_states keeps
    every state through the stack's `forward_keeping_states` and write gates run through its
    `forward_gated` where the stack has them (`supports_keeping_states`, `supports_parallel_gates`: a
    Mamba memory); another SSM runs step by step (the reference). record: also the `WriteRecord`."""
    B, N, (W, M) = c.token_scores.shape[0], c.slot_valid.shape[1], c.window.shape
    pooling = c.pooling
    win_scores, win_values, win_valid = c.windows(regular)
    pooled, weights = pooling.pool(win_scores.flatten(0, 1), win_values.flatten(0, 1), win_valid.flatten(0, 1))
    steps = pooled.view(B, W, -1)
    gates = pooling.write_gate(pooled)
    all_gates = gates.view(B, W) if gates is not None else None
    if record:  # the SSM's input only: the gates read `pooled` itself
        input_probe = probe(steps)
        steps = steps + input_probe
    read_states, mode = None, "sequence"
    parallel_states, parallel_gates = c.ssm.supports_keeping_states, c.ssm.supports_parallel_gates
    if gates is not None and parallel_gates and W == 1 and not keep_states:
        # one write (decoding): a Mamba step per layer costs half of a one-step scan's setup
        out, ssm_state = ssm_steps(c.ssm, steps[:, 0], c.ssm_state, gates.view(B))
        out, mode = out[:, None], "loop"
    elif gates is not None and parallel_gates:  # one gated scan per layer
        out, ssm_state, read_states = c.ssm.forward_gated(steps, all_gates, c.ssm_state, keep_states)
    elif keep_states and gates is None and parallel_states:  # every state, still in parallel
        out, ssm_state, read_states = c.ssm.forward_keeping_states(steps, c.ssm_state)
    elif keep_states or gates is not None:  # step by step: the reference, and another SSM's gated writes
        outs, kept, ssm_state = [], [], c.ssm_state
        step_gates = all_gates.unbind(1) if gates is not None else [None] * W
        for w in range(W):
            step_out, ssm_state = ssm_steps(c.ssm, steps[:, w], ssm_state, step_gates[w])
            outs.append(step_out)
            if keep_states:
                kept.append(ssm_state["ssm_scan"][:, -1])
        out, read_states = torch.stack(outs, 1), torch.stack(kept, 1) if keep_states else None
        mode = "loop"
    else:
        out, ssm_state = c.ssm(steps, c.ssm_state)
    written = None
    if record:
        output_probe = probe(out)
        out = out + output_probe
        written = WriteRecord(mode, steps, out, input_probe, output_probe)
    slots = c.to_slot(out, None)
    weights = weights.view(B, W, pooling.n_heads, M)
    weights = torch.cat([weights.new_zeros(B, W, pooling.n_heads, N), weights], dim=-1)
    return ChainResult(slots, weights, None, None, ssm_state, read_states, all_gates, written)


def loop_chain(c: ChainInputs, keep_states: bool = False, record: bool = False) -> ChainResult:
    """One write at a time through autograd: any memory SSM, and the reference of the fused path.
    record: also the `WriteRecord` (mode "loop")."""
    B, N, W = c.slot_scores.shape[0], c.slot_scores.shape[1], c.window.shape[0]
    pooling, slot_scores, slot_values, slot_valid, ssm_state = (c.pooling, c.slot_scores, c.slot_values,
                                                                c.slot_valid, c.ssm_state)
    win_scores, win_values, win_valid = c.windows()
    # unbind once: indexing [:, w] inside the loop would make every write's backward
    # allocate and accumulate a gradient the size of all windows
    step_scores, step_values = win_scores.unbind(1), win_values.to(slot_values.dtype).unbind(1)
    step_valid = win_valid.unbind(1)
    slots, all_weights, kept, gates, inputs, outputs = [], [], [], [], [], []
    input_probe = output_probe = None  # with record: made at the first write, in its dtype
    for w in range(W):
        scores = torch.cat([slot_scores, step_scores[w]], dim=1)
        values = torch.cat([slot_values, step_values[w]], dim=1)
        valid = torch.cat([slot_valid, step_valid[w]], dim=1)
        pooled, weights = pooling.pool(scores, values, valid)
        gate = pooling.write_gate(pooled)
        if record:  # the SSM's input only: the gate reads `pooled` itself
            input_probe = probe(pooled, W) if input_probe is None else input_probe
            pooled = pooled + input_probe[:, w]
            inputs.append(pooled)
        out, ssm_state = ssm_steps(c.ssm, pooled, ssm_state, gate)
        if record:
            output_probe = probe(out, W) if output_probe is None else output_probe
            out = out + output_probe[:, w]
            outputs.append(out)
        gates.append(gate)
        slot = c.to_slot(out, w)
        new_score, new_value = pooling.project(slot)
        if N > 0:
            slot_scores = torch.cat([slot_scores[:, 1:], new_score[:, None]], dim=1)
            slot_values = torch.cat([slot_values[:, 1:], new_value[:, None].to(slot_values.dtype)], dim=1)
            slot_valid = torch.cat([slot_valid[:, 1:], slot_valid.new_ones(B, 1)], dim=1)
        slots.append(slot)
        all_weights.append(weights)
        if keep_states:
            kept.append(ssm_state["ssm_scan"][:, -1])
    read_states = torch.stack(kept, 1) if keep_states else None
    all_gates = torch.stack(gates, 1) if pooling.gate is not None else None
    written = None
    if record:
        written = WriteRecord("loop", torch.stack(inputs, 1), torch.stack(outputs, 1), input_probe, output_probe)
    return ChainResult(torch.stack(slots, 1), torch.stack(all_weights, 1), slot_scores, slot_values, ssm_state,
                       read_states, all_gates, written)


def write_chain_reference(
    pooling: AttentionPooling,
    ssm,
    to_slot: Callable[[Tensor, int | None], Tensor],
    embeddings: Tensor,
    n_slots: int,
    window_tokens: int,
    stride: int,
    pool_over_memory: bool = True,
) -> tuple[Tensor, Tensor]:
    """From a fresh stream: explicit windows, one write at a time. Returns slots, weights."""
    B, T, d = embeddings.shape
    N, M = n_slots, window_tokens
    state = ssm.init_state(B, embeddings.device)
    slots: list[Tensor] = []
    all_weights = []
    for k in range(T // stride):
        t = (k + 1) * stride - 1
        memory = slots[max(0, k - N):k] if pool_over_memory else []
        mem = torch.zeros(B, N, d, dtype=embeddings.dtype, device=embeddings.device)
        mem_mask = torch.zeros(B, N, dtype=torch.bool, device=embeddings.device)
        for i, slot in enumerate(memory):
            mem[:, N - len(memory) + i] = slot
            mem_mask[:, N - len(memory) + i] = True
        tok = torch.zeros(B, M, d, dtype=embeddings.dtype, device=embeddings.device)
        tok_mask = torch.zeros(B, M, dtype=torch.bool, device=embeddings.device)
        first = max(0, t - M + 1)
        tok[:, M - (t + 1 - first):] = embeddings[:, first:t + 1]
        tok_mask[:, M - (t + 1 - first):] = True
        pooled, weights = pooling(torch.cat([mem, tok], 1), torch.cat([mem_mask, tok_mask], 1))
        out, state = ssm_steps(ssm, pooled, state, pooling.write_gate(pooled))
        slots.append(to_slot(out, k))
        all_weights.append(weights)
    return torch.stack(slots, 1), torch.stack(all_weights, 1)
