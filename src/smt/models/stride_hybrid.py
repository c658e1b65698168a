"""StrideHybridModel: the Stride Memory Transformer (its semantics: docs/architecture.md).

One forward call, for T new tokens continuing a stream (or starting one):
  (a) token embeddings for all T tokens (the vectors that enter the transformer);
  (b) the write chain: T // S writes (more or fewer when continuing mid-stride), each pooling
      its window and stepping the SSM; the SSM outputs become memory slot vectors;
  (c) one parallel transformer pass over the T tokens and the new slots, with per-layer
      windowed attention (token t: the last M tokens and the last N visible slots).
The returned state carries fixed-size buffers, so a stream can be fed in any split (down to
one token at a time) with the same logits as one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from smt.config import StrideHybridConfig
from smt.models.base import LanguageModel, count
from smt.models.components.rope import rope_tables
from smt.models.components.stream_state import StreamState
from smt.models.components.transformer import SimpleCausalTransformer
from smt.models.components.windowed_attention import WriteLayout, build_geometry
from smt.models.memory import Memory, build_memory


def check_input_ids(input_ids: Tensor, vocab_size: int) -> Tensor:
    """Validate token ids: an integer tensor (B, T), non-empty, every id in [0, vocab_size)."""
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype == torch.bool or input_ids.is_floating_point() or input_ids.is_complex():
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}; "
                        "use input_ids.long()")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}; "
                         "for one sequence use input_ids[None]")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}); pass at least one token")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is out of range for vocab_size={vocab_size}; ids must be in "
                         f"[0, {vocab_size - 1}] (was the text tokenized with this model's tokenizer?)")
    return input_ids.long()


class StrideHybridModel(LanguageModel):
    """The Stride Memory Transformer; also the sliding-window baseline (arch='swa' or N=0)."""

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__(config)
        if config.arch not in ("smt", "swa"):
            raise ValueError(f"arch={config.arch!r} is a baseline with its own class; "
                             "build it with smt.models.build_model(config)")
        self.n_slots = config.n_ssm_outputs if config.has_memory else 0
        self._make_embedding(positions=config.position == "learned")
        self.transformer = SimpleCausalTransformer(config)
        self.memory: Memory | None = None
        if self.n_slots > 0:
            self._adopt(build_memory(config))
        self._make_head()
        self._finish_init()

    def _adopt(self, memory: Memory) -> None:
        """Hold `memory` and register its parts on the model itself: the parameter names stay those of
        the checkpoints written before the memory package (`pooling.*`, `ssm.*`, `memory_proj.*`,
        `memory_read.*`), and `model.pooling` is `model.memory.pooling`."""
        object.__setattr__(self, "memory", memory)  # not a child: its parts are, under their own names
        for name, part in memory.named_children():
            self.add_module(name, part)

    # ------------------------------------------------------------------ sizes
    def _breakdown(self) -> dict[str, int]:
        return {"transformer": count(self.transformer), "attention_pooling": count(getattr(self, "pooling", None)),
                "ssm": count(getattr(self, "ssm", None)) + count(getattr(self, "memory_proj", None))
                + count(getattr(self, "memory_read", None))}

    # ------------------------------------------------------------------ state
    def init_state(self, batch_size: int) -> StreamState:
        """The state of `batch_size` fresh streams (nothing seen yet)."""
        cfg, dev, dt = self.config, self.device, self.wte.weight.dtype
        L, H, dh, M, N = cfg.transformer_n_layers, cfg.n_heads, cfg.d_head, cfg.m_input_tokens, self.n_slots
        buffers = {
            "token_kv": torch.zeros(batch_size, L, 2, H, M - 1, dh, device=dev, dtype=dt),
            "slot_kv": torch.zeros(batch_size, L, 2, H, N, dh, device=dev, dtype=dt),
        }
        if self.memory is not None:
            buffers.update(self.memory.init_state(batch_size, dev, dt))
        position = torch.zeros(batch_size, dtype=torch.long, device=dev)
        return StreamState(position, buffers)

    def _check_state(self, state: StreamState | None, batch: int) -> StreamState:
        state = super()._check_state(state, batch)
        if not self.n_slots:  # no writes (arch swa): rows may stand anywhere, the stride does not apply
            return state
        phase = state.position % self.config.stride
        if bool((phase != phase[0]).any()):
            raise ValueError("all streams in a batch must be at the same position modulo stride "
                             f"({self.config.stride}); got positions {state.position.tolist()}")
        return state

    # ---------------------------------------------------------------- forward
    def forward(self, input_ids: Tensor, state: StreamState | None = None,
                targets: Tensor | None = None) -> tuple[Tensor | None, dict]:
        """logits (B, T, vocab) and aux: n_writes, attention_weights (B, W, N+M),
        attention_weights_per_head (B, W, heads, N+M), memory (B, W, d), state; with write_gate also
        write_gates (B, W), and in training with write_gate_sparsity > 0 auxiliary_loss (a scalar the
        trainer adds to the mean token loss: the sparsity weight times the mean gate); with
        `memory.record_writes` also write_record (a `memory.WriteRecord`). With targets
        (B, T), no logits (None) and aux["nll_sum"], the fused head loss (`LanguageModel._head`)."""
        cfg = self.config
        ids = check_input_ids(input_ids, cfg.vocab_size).to(self.device)
        B, T = ids.shape
        state = self._check_state(state, B)
        p = state.position
        M, N, S = cfg.m_input_tokens, self.n_slots, cfg.stride
        arange_t = torch.arange(T, device=ids.device)
        token_pos = p[:, None] + arange_t
        x = self.wte(ids)
        if self.wpe is not None:
            end = int(p.max()) + T
            if end > cfg.max_position_embeddings:
                raise ValueError(
                    f"position {end - 1} is beyond the learned position table "
                    f"(max_position_embeddings={cfg.max_position_embeddings}); use position='rope' for "
                    "unbounded streams, or feed shorter streams")
            x = x + self.wpe(token_pos)
        x = F.dropout(x, cfg.dropout, self.training)

        buffers = state.buffers
        new_buffers: dict[str, Tensor] = {}
        layout = WriteLayout.of(p, T, M, N, S)
        slot_token_pos = layout.slot_token_pos  # the token each new slot summarises
        aux: dict = {"n_writes": layout.n_writes}
        if self.memory is not None:
            slot_offsets = self.wpe(slot_token_pos) if self.wpe is not None else None
            result = self.memory.write(x, layout, buffers, slot_offsets)
            new_buffers.update(result.state)
            if result.gates is not None:
                aux["write_gates"] = result.gates
                if self.training and cfg.write_gate_sparsity > 0 and result.gates.numel():
                    aux["auxiliary_loss"] = cfg.write_gate_sparsity * result.gates.mean()
            x = self.memory.read(x, buffers, result, layout)
            slots = result.slots
            aux["attention_weights_per_head"] = result.weights
            aux["attention_weights"] = result.weights.mean(2)
            aux["memory"] = slots
            if result.record is not None:  # the memory was asked to record its writes (the diagnostics)
                aux["write_record"] = result.record
        else:
            slots = x.new_zeros(B, 0, cfg.d_model)

        geom = build_geometry(p, T, M, N, S, cfg.attention_impl, cfg.block_size, layout)
        rope = None
        if cfg.position == "rope":
            rope = rope_tables(torch.cat([token_pos, slot_token_pos], 1), cfg.d_head, cfg.rope_base, x.dtype)
        caches = [
            (buffers["token_kv"][:, i, 0], buffers["token_kv"][:, i, 1],
             buffers["slot_kv"][:, i, 0], buffers["slot_kv"][:, i, 1])
            for i in range(cfg.transformer_n_layers)
        ]
        hidden, _, new_caches = self.transformer(x, slots, rope, caches, geom)
        logits = self._head(hidden, targets, ids, aux)
        new_buffers["token_kv"] = torch.stack([torch.stack(c[:2], 1) for c in new_caches], 1)
        new_buffers["slot_kv"] = torch.stack([torch.stack(c[2:], 1) for c in new_caches], 1)
        aux["state"] = StreamState(p + T, new_buffers)
        return logits, aux
