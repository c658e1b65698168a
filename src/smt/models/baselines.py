"""Baselines that share SMT's blocks, interface and state handling (docs/evaluation.md).

`build_model(config)` dispatches on `config.arch`:
  smt    StrideHybridModel (window + SSM memory)
  swa    StrideHybridModel without memory: a sliding-window transformer with the same window M
  gpt    FullAttentionLM: the same GPT-2 blocks with causal attention over the whole context;
         its key/value cache is the one state that grows with the stream
  mamba  MambaLM: token embeddings straight into the SSM stack (ssm_n_layers deep), tied lm_head

Every model answers `logits, aux = model(input_ids, state=None)` with aux["state"] a StreamState,
and has init_state, step, generate and count_parameters with the same breakdown keys, so the
trainer, the evaluation and the demo treat them alike. `size_to_budget` picks the depth of a
baseline so its parameter count matches a budget (by default the SMT model's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from smt.config import StrideHybridConfig
from smt.models.base import LanguageModel, count, load_pretrained
from smt.models.components.attention_pooling import AttentionPooling
from smt.models.components.rope import rope_tables
from smt.models.components.ssm import build_ssm
from smt.models.components.stream_state import StreamState
from smt.models.components.transformer import SimpleCausalTransformer
from smt.models.components.windowed_attention import full_attention_geometry
from smt.models.stride_hybrid import StrideHybridModel, check_input_ids


class FullAttentionLM(LanguageModel):
    """GPT: SMT's transformer blocks with causal attention over everything seen so far.

    The state's `token_kv` (B, layers, 2, heads, cached, d_head) grows with the stream; it is
    cut to the longest live stream of the batch, and keys before a row's stream start (after
    `reset_rows`) are masked, so rows may sit at different positions.
    """

    growing_state = ("token_kv",)

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__(config)
        if config.arch != "gpt":
            raise ValueError(f"FullAttentionLM is arch 'gpt', got arch={config.arch!r}; use build_model(config)")
        self._make_embedding()
        self._make_head()
        if config.position == "learned":
            self.wpe = nn.Embedding(config.max_position_embeddings, config.d_model)
            nn.init.normal_(self.wpe.weight, std=config.initializer_range / 2)
        self.transformer = SimpleCausalTransformer(config)
        self._finish_init()

    def _breakdown(self) -> dict[str, int]:
        return {"transformer": count(self.transformer)}

    def init_state(self, batch_size: int) -> StreamState:
        cfg, dev, dt = self.config, self.device, self.wte.weight.dtype
        kv = torch.zeros(batch_size, cfg.transformer_n_layers, 2, cfg.n_heads, 0, cfg.d_head, device=dev, dtype=dt)
        return StreamState(torch.zeros(batch_size, dtype=torch.long, device=dev), {"token_kv": kv})

    def forward(self, input_ids: Tensor, state: StreamState | None = None,
                targets: Tensor | None = None) -> tuple[Tensor | None, dict]:
        """logits (B, T, vocab) and aux: n_writes (always 0) and state (the grown KV cache); with targets,
        no logits and aux["nll_sum"] (`LanguageModel._head`)."""
        cfg = self.config
        ids = check_input_ids(input_ids, cfg.vocab_size).to(self.device)
        B, T = ids.shape
        state = self._check_state(state, B)
        p = state.position
        token_pos = p[:, None] + torch.arange(T, device=ids.device)
        x = self.wte(ids)
        if self.wpe is not None:
            end = int(p.max()) + T
            if end > cfg.max_position_embeddings:
                raise ValueError(f"position {end - 1} is beyond the learned position table "
                                 f"(max_position_embeddings={cfg.max_position_embeddings}); use "
                                 "position='rope' or feed shorter streams")
            x = x + self.wpe(token_pos)
        x = torch.nn.functional.dropout(x, cfg.dropout, self.training)
        kv = state.buffers["token_kv"]  # at most context_length - 1 keys: cut below
        cached = kv.shape[-2]
        geom = full_attention_geometry(p, T, cached, cfg.context_length)
        rope = rope_tables(token_pos, cfg.d_head, cfg.rope_base, x.dtype) if cfg.position == "rope" else None
        empty = kv.new_zeros(B, cfg.n_heads, 0, cfg.d_head)
        caches = [(kv[:, i, 0], kv[:, i, 1], empty, empty) for i in range(cfg.transformer_n_layers)]
        hidden, _, new_caches = self.transformer(x, x.new_zeros(B, 0, cfg.d_model), rope, caches, geom)
        new_kv = torch.stack([torch.stack(c[:2], 1) for c in new_caches], 1)
        keep = min(new_kv.shape[-2], int((p + T).max()))  # older keys are before every row's start
        if cfg.context_length is not None:  # slide: each token sees its last context_length tokens
            keep = min(keep, cfg.context_length - 1)
        new_kv = new_kv[..., new_kv.shape[-2] - keep:, :]
        aux = {"n_writes": 0, "state": StreamState(p + T, {"token_kv": new_kv})}
        return self._head(hidden, targets, ids, aux), aux


class MambaLM(LanguageModel):
    """Mamba-only LM: token embeddings -> the SSM stack (ssm_n_layers, ssm_type) -> tied lm_head."""

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__(config)
        if config.arch != "mamba":
            raise ValueError(f"MambaLM is arch 'mamba', got arch={config.arch!r}; use build_model(config)")
        if config.ssm_n_layers < 1:
            raise ValueError("arch 'mamba' needs ssm_n_layers >= 1 (the SSM stack is the whole model)")
        self._make_embedding()
        self._make_head()
        self.ssm = build_ssm(config)
        self._finish_init()

    def _breakdown(self) -> dict[str, int]:
        return {"ssm": count(self.ssm)}

    def init_state(self, batch_size: int) -> StreamState:
        dev = self.device
        buffers = self.ssm.init_state(batch_size, dev)  # float32, as in StrideHybridModel
        return StreamState(torch.zeros(batch_size, dtype=torch.long, device=dev), buffers)

    def forward(self, input_ids: Tensor, state: StreamState | None = None,
                targets: Tensor | None = None) -> tuple[Tensor | None, dict]:
        """logits (B, T, vocab) and aux: n_writes (always 0) and state (the fixed-size SSM state); with
        targets, no logits and aux["nll_sum"] (`LanguageModel._head`)."""
        ids = check_input_ids(input_ids, self.config.vocab_size).to(self.device)
        B, T = ids.shape
        state = self._check_state(state, B)
        x = torch.nn.functional.dropout(self.wte(ids), self.config.dropout, self.training)
        hidden, new_ssm = self.ssm(x, state.buffers)
        aux = {"n_writes": 0, "state": StreamState(state.position + T, new_ssm)}
        return self._head(hidden, targets, ids, aux), aux


def build_model(config: StrideHybridConfig) -> nn.Module:
    """The model for `config.arch`: smt | swa -> StrideHybridModel, gpt -> FullAttentionLM,
    mamba -> MambaLM."""
    if not isinstance(config, StrideHybridConfig):
        raise TypeError(f"build_model takes a StrideHybridConfig, got {type(config).__name__}")
    if config.arch in ("smt", "swa"):
        return StrideHybridModel(config)
    if config.arch == "gpt":
        return FullAttentionLM(config)
    return MambaLM(config)


def load_model(path_or_repo: str | Path, device: str | None = None, revision: str | None = None,
               **config_overrides: Any) -> nn.Module:
    """The model of a model directory or training step directory, whatever its arch, in eval mode
    (`StrideHybridModel.from_pretrained` for SMT only)."""
    return load_pretrained(path_or_repo, build_model, device, revision, **config_overrides)


def _depth_field(arch: str) -> str:
    return "ssm_n_layers" if arch == "mamba" else "transformer_n_layers"


def _stack_size(config: StrideHybridConfig, depth: int) -> int:
    """Parameters of a model of `config` with `depth` layers in its variable stack, counted from
    its parts (the vocabulary-sized embedding is never allocated)."""
    cfg = config.replace(**{_depth_field(config.arch): depth})
    d, V = cfg.d_model, cfg.vocab_size
    embedding = V * d + (cfg.max_position_embeddings * d if cfg.position == "learned" and cfg.arch != "mamba" else 0)
    head = 0 if cfg.tie_embeddings else V * d
    if cfg.arch == "mamba":
        return embedding + head + count(build_ssm(cfg))
    total = embedding + head + count(SimpleCausalTransformer(cfg))
    if cfg.has_memory:
        pooling = AttentionPooling(d, cfg.pooling_heads)
        total += count(pooling) + count(build_ssm(cfg)) + d * d  # d * d: memory_proj
    return total


def size_to_budget(config: StrideHybridConfig, budget: int, tolerance: float = 0.1) -> StrideHybridConfig:
    """`config` resized to about `budget` parameters: the depth of its variable stack (transformer_n_layers
    for gpt/swa/smt, ssm_n_layers for mamba) closest to the budget, then, for the transformer
    archs, the MLP width d_ff to close the gap that whole layers leave. Raises ValueError when
    the result is off by more than `tolerance` (a fraction of the budget)."""
    if budget < 1:
        raise ValueError(f"budget={budget} must be a positive parameter count")
    one, two = _stack_size(config, 1), _stack_size(config, 2)
    per_layer = two - one
    base = one - per_layer
    depth = max(1, round((budget - base) / per_layer))
    sized = config.replace(**{_depth_field(config.arch): depth})
    if config.arch != "mamba":
        d = config.d_model
        mlp = 2 * d * config.ffn_dim + config.ffn_dim + d
        width = round(((budget - base) / depth - (per_layer - mlp) - d) / (2 * d + 1))
        sized = sized.replace(d_ff=max(1, width))
    total = _stack_size(sized, depth)
    if abs(total - budget) > tolerance * budget:
        raise ValueError(f"arch={config.arch!r} cannot match {budget:,} parameters within {tolerance:.0%}: "
                         f"{depth} layer(s) give {total:,} (the embedding alone is {base:,}); change d_model "
                         "or the tolerance")
    return sized


def matched_baseline(config: StrideHybridConfig, arch: str, tolerance: float = 0.1) -> StrideHybridConfig:
    """The `arch` baseline of an SMT `config` with the same window, width and vocabulary, sized to
    the SMT model's parameter count (swa keeps M and drops the memory: n_ssm_outputs=0)."""
    if arch not in ("smt", "gpt", "swa", "mamba"):
        raise ValueError(f"arch={arch!r}: use one of smt, gpt, swa, mamba")
    budget = _stack_size(config, getattr(config, _depth_field(config.arch)))
    if arch == "smt":
        return config.replace(arch="smt")
    changes: dict = {"arch": arch}
    if arch == "swa":
        changes["n_ssm_outputs"] = 0
    return size_to_budget(config.replace(**changes), budget, tolerance)
