"""LanguageModel: what SMT and its baselines share (embeddings, the tied head, device and dtype,
parameter counts, the check of a carried stream state) on top of StreamingGeneration's
generate / step.

The embedding and the head are made by two calls, `_make_embedding` and `_make_head`, that each
model places where its parameters have always been initialised: the random draws happen in the
same order as before, so a seed gives the same model (and every recorded result its numbers).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from smt.config import StrideHybridConfig
from smt.model_directory import load_weights, read_config, resolve_directory, save_model_dir, verify_model_files
from smt.models.components.head_loss import IGNORE_INDEX, linear_cross_entropy
from smt.models.components.stream_state import StreamState
from smt.models.generation import StreamingGeneration


def check_targets(targets: Tensor, ids: Tensor, vocab_size: int) -> Tensor:
    """targets on the ids' device, checked: the ids' shape, token ids in [0, vocab_size) or IGNORE_INDEX."""
    if not isinstance(targets, Tensor) or targets.dtype not in (torch.int64, torch.int32):
        raise TypeError("targets must be an integer tensor of token ids (B, T), like input_ids")
    if targets.shape != ids.shape:
        raise ValueError(f"targets have shape {tuple(targets.shape)} but input_ids {tuple(ids.shape)}; pass one "
                         "target per input token (the next token, or IGNORE_INDEX = -100 where there is none)")
    targets = targets.to(ids.device, torch.long)
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab_size))
    if bool(bad.any()):
        raise ValueError(f"target token id {int(targets[bad][0])} is outside the vocabulary [0, {vocab_size}); "
                         f"use ids below vocab_size, or {IGNORE_INDEX} for positions without a target")
    return targets


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        # the seed's quick start builds with device='cuda' "or 'cpu'": on a machine without a GPU
        # the model is built on the CPU, said once, rather than failing
        warnings.warn(f"device={name!r} but CUDA is not available here: the model is built on the CPU "
                      "(use device='cpu' or 'auto' to silence this)", stacklevel=3)
        return torch.device("cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' but MPS is not available here; use device='cpu' or 'auto'")
    return torch.device(name)


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


class LanguageModel(StreamingGeneration, nn.Module):
    """Subclasses call `_make_embedding`, build their body, `_make_head` (in the order that fixes
    their initialisation), then `_finish_init`; they provide `_breakdown`, `init_state`, `forward`."""

    # buffers of the stream state whose length axis (-2) grows along the stream
    growing_state: tuple[str, ...] = ()

    def __init__(self, config: StrideHybridConfig) -> None:
        super().__init__()
        self.config = config

    def _make_embedding(self, positions: bool = False) -> None:
        cfg = self.config
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_position_embeddings, cfg.d_model) if positions else None

    def _make_head(self) -> None:
        """The lm_head (tied to the embedding unless config.tie_embeddings is false), and the
        embeddings' initialisation."""
        cfg = self.config
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        nn.init.normal_(self.wte.weight, std=cfg.initializer_range)
        if self.wpe is not None:
            nn.init.normal_(self.wpe.weight, std=cfg.initializer_range / 2)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=cfg.initializer_range)

    def _finish_init(self) -> None:
        """Cast to config.dtype and move to config.device; a model built on the meta device
        (`with torch.device("meta")`, as transformers builds models before loading weights) is
        only cast: its parameters have no data to move, and the loader places them."""
        dtype = getattr(torch, self.config.dtype)
        if any(p.is_meta for p in self.parameters()):
            self.to(dtype=dtype)
        else:
            self.to(device=resolve_device(self.config.device), dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    def _breakdown(self) -> dict[str, int]:
        """The model's parts beyond the embedding and head (transformer / attention_pooling / ssm)."""
        return {}

    def count_parameters(self) -> dict:
        """Total (tied weights counted once) and a breakdown by part, the same keys for every model."""
        tied = self.lm_head.weight is self.wte.weight
        breakdown = {"embedding": count(self.wte) + count(self.wpe), "transformer": 0, "attention_pooling": 0,
                     "ssm": 0, "lm_head": 0 if tied else count(self.lm_head), **self._breakdown()}
        return {"total": sum(p.numel() for p in self.parameters()), "breakdown": breakdown, "lm_head_tied": tied}

    def _head(self, hidden: Tensor, targets: Tensor | None, ids: Tensor, aux: dict) -> Tensor | None:
        """The logits (B, T, vocab); with targets (B, T) instead None, aux["nll_sum"], the summed
        next-token NLL over the targets that are not IGNORE_INDEX, from the fused head loss
        (`head_loss.linear_cross_entropy`: the (tokens, vocab) logits are never formed), and
        aux["loss"], the whole training objective: the mean NLL plus every auxiliary term the model
        set before (the write gates' sparsity penalty), what a user's own loop should minimise."""
        if targets is None:
            return self.lm_head(hidden)
        targets = check_targets(targets, ids, self.config.vocab_size)
        aux["nll_sum"] = linear_cross_entropy(hidden, self.lm_head.weight, targets)
        n_targets = (targets != IGNORE_INDEX).sum().clamp_min(1)
        aux["loss"] = aux["nll_sum"] / n_targets
        if "auxiliary_loss" in aux:
            aux["loss"] = aux["loss"] + aux["auxiliary_loss"]
        return None

    def _check_state(self, state: StreamState | None, batch: int) -> StreamState:
        """A fresh state for `batch` streams, or `state` checked (and cast) for this model."""
        if state is None:
            return self.init_state(batch)  # type: ignore[attr-defined]
        if not isinstance(state, StreamState):
            raise TypeError("state must be a StreamState (aux['state'] of a previous call), "
                            f"got {type(state).__name__}")
        return state.fitted_to(self._state_template(), batch,
                               f"{type(self).__name__} (arch={self.config.arch!r})", grows=self.growing_state)

    def _state_template(self) -> StreamState:
        """init_state(1), what a state is checked against, kept while the device and dtypes that make it
        stay the same (a decode step would otherwise allocate and zero every buffer to read their shapes)."""
        key = (self.device, self.wte.weight.dtype, torch.get_default_dtype())
        kept = self.__dict__.get("_kept_state_template")
        if kept is None or kept[0] != key:
            kept = (key, self.init_state(1))  # type: ignore[attr-defined]
            self.__dict__["_kept_state_template"] = kept
        return kept[1]

    # ------------------------------------------------------------- sharing
    def save_pretrained(self, save_directory: str | Path, tokenizer: Any = None, safe_serialization: bool = True,
                        evaluation: dict[str, Any] | None = None, max_shard_size: int | str | None = None) -> None:
        """Write the model directory (config.json, model.safetensors, the tokenizer when given, the
        transformers files, a model card with the `evaluation` numbers when given, checksums.json):
        smt.model_directory. `max_shard_size` (bytes, or "5GB") shards larger weights with an index."""
        save_model_dir(self, save_directory, tokenizer, safe_serialization, evaluation, max_shard_size=max_shard_size)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | Path, device: str | None = None, revision: str | None = None,
                        **config_overrides: Any):
        """Load a model directory or training step directory (a local path, or a hub repo id when
        online) into this class, on `device` ('cpu' when None, like Hugging Face; or 'cuda',
        'auto'). config_overrides change fields that keep the weight shapes (attention_impl,
        use_cuda_kernels, dtype, dropout, ...); a shape-changing override is refused."""
        return load_pretrained(path_or_repo, cls, device, revision, **config_overrides)


def load_pretrained(path_or_repo: str | Path, build: Callable[[StrideHybridConfig], nn.Module],
                    device: str | None = None, revision: str | None = None, **config_overrides: Any) -> Any:
    """`build(config)` with the weights of a model or step directory, in eval mode; the directory's
    integrity record (checksums.json or training.json) is checked first."""
    directory = resolve_directory(path_or_repo, revision)
    if directory.is_file():
        raise ValueError(f"{directory} is a file; pass the directory holding config.json and the weights")
    verify_model_files(directory)
    config = read_config(directory, **{**config_overrides, "device": device or config_overrides.get("device", "cpu")})
    model = build(config)
    load_weights(model, directory, verify=False)  # just verified
    return model.eval()
