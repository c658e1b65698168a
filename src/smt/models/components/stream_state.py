"""The streaming state: everything a model carries from one chunk of a stream to the next.

All buffers have a fixed size that does not depend on how many tokens were seen:
  token_kv    (B, layers, 2, heads, M-1, d_head)  keys/values of the last M-1 tokens, per layer
  slot_kv     (B, layers, 2, heads, N, d_head)    keys/values of the last N memory slots, per layer
  pool_token_scores / pool_token_values  (B, M-1, pool heads) / (B, M-1, d)  the pooling window
  pool_slot_scores / pool_slot_values    (B, N, pool heads) / (B, N, d)  (memory: slot_feedback only)
  ssm_*       the SSM state (conv + scan state per layer), see components/ssm.py
Buffers are left-padded: entry i of a buffer of length L holds the item L - i steps back,
and entries older than the start of the stream are zero and masked by `position`.
Every tensor has the batch as its first dimension, so rows can be reset or selected alike.
(The full-attention baseline's KV cache is the one state here that grows; it is the baseline.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class StreamState:
    """State carried across calls: `position` (B,) tokens seen per row, and fixed-size buffers."""

    position: Tensor
    buffers: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.position.shape[0])

    def nbytes(self) -> int:
        """Bytes held by the state (position included)."""
        tensors = [self.position, *self.buffers.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def detach(self) -> StreamState:
        """The same state cut from the autograd graph (truncated backpropagation through time)."""
        return StreamState(self.position.clone(), {k: v.detach() for k, v in self.buffers.items()})

    def select(self, rows: Tensor) -> StreamState:
        """The state of a subset of rows (index or boolean mask)."""
        return StreamState(self.position[rows], {k: v[rows] for k, v in self.buffers.items()})

    def reset_rows(self, rows: Tensor) -> StreamState:
        """A state where the rows marked True in `rows` (B,) start a fresh stream."""
        rows = rows.to(device=self.position.device, dtype=torch.bool)
        if rows.shape != self.position.shape:
            raise ValueError(f"reset_rows expects a mask of shape {tuple(self.position.shape)}, "
                             f"got {tuple(rows.shape)}")
        position = torch.where(rows, torch.zeros_like(self.position), self.position)
        buffers = {}
        for name, value in self.buffers.items():
            keep = (~rows).view(-1, *([1] * (value.dim() - 1))).to(value.dtype)
            buffers[name] = value * keep
        return StreamState(position, buffers)

    def fitted_to(self, fresh: StreamState, batch: int, model: str, grows: tuple[str, ...] = ()) -> StreamState:
        """This state, checked against the fresh state (`init_state(1)`) of the model that is to
        continue it, with floating buffers cast to that model's dtypes (a float64 or bfloat16
        state continues a float32 model). A ValueError names what does not fit: the batch, a
        buffer's shape (buffers in `grows` may differ along their length axis, -2) or kind, the
        positions."""
        if self.batch_size != batch:
            raise ValueError(f"state holds {self.batch_size} streams but input_ids has batch {batch}")
        if self.position.dtype.is_floating_point or self.position.dtype == torch.bool:
            raise ValueError(f"state.position has dtype {self.position.dtype}; positions are token counts "
                             "(torch.long), as model.init_state gives them")
        if bool((self.position < 0).any()):
            raise ValueError(f"state.position holds negative positions {self.position.tolist()}; a stream "
                             "starts at 0 (model.init_state) and counts the tokens seen")
        buffers = dict(self.buffers)
        for name, ref in fresh.buffers.items():
            got = self.buffers.get(name)

            def fixed(shape: torch.Size, name: str = name) -> torch.Size:
                return shape[1:-2] + shape[-1:] if name in grows else shape[1:]

            if got is None or fixed(got.shape) != fixed(ref.shape):
                raise ValueError(f"state buffer {name!r} has shape {None if got is None else tuple(got.shape)}, "
                                 f"expected (batch, {', '.join(map(str, ref.shape[1:]))}): the state comes from "
                                 f"a different model (or a different config) than this {model}")
            if not got.dtype.is_floating_point:
                raise ValueError(f"state buffer {name!r} has dtype {got.dtype}; this {model} keeps it in "
                                 f"{ref.dtype} (start from model.init_state)")
            buffers[name] = got.to(ref.dtype)
        return StreamState(self.position.long(), buffers)

    def to(self, device: torch.device | str) -> StreamState:
        return StreamState(self.position.to(device), {k: v.to(device) for k, v in self.buffers.items()})

    def state_dict(self) -> dict[str, Tensor]:
        """Flat tensors, e.g. for safetensors."""
        return {"position": self.position, **{f"buffers.{k}": v for k, v in self.buffers.items()}}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor]) -> StreamState:
        buffers = {k.removeprefix("buffers."): v for k, v in tensors.items() if k != "position"}
        return cls(tensors["position"], buffers)
