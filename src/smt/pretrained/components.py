"""StrideHybridModel from pretrained parts: GPT-2 blocks for the transformer, Mamba for the SSM.

Everything without a counterpart (attention pooling, the memory-slot projection, new vocabulary
rows) keeps the model's fresh initialisation, and the returned model carries a LoadReport
(`model.load_report`) saying, tensor by tensor, what was loaded from where and what is new and why.
"""

from __future__ import annotations

from typing import Any

import torch

from smt.config import StrideHybridConfig, pad_vocab_size
from smt.models.stride_hybrid import StrideHybridModel
from smt.pretrained.gpt2 import map_gpt2
from smt.pretrained.mamba import map_mamba
from smt.pretrained.mapping import MappedCheckpoint, Source, WeightMismatchError
from smt.pretrained.report import LoadReport
from smt.pretrained.sources import load_checkpoint

EMBEDDING_CHOICES = ("auto", "gpt2", "mamba", "none")
NEW_PART_REASONS = {
    "pooling.": "attention pooling is new in SMT (no counterpart in GPT-2 or Mamba)",
    "memory_proj.": "memory-slot projection (SSM output -> slot) is new in SMT",
    "ssm.": "no Mamba checkpoint given (mamba=None)",
    "transformer.": "no GPT-2 checkpoint given (gpt2=None)",
    "wpe.": "no GPT-2 checkpoint given, so no learned position table",
    "wte.": "embedding='none': no embedding taken from a checkpoint",
    "lm_head.": "untied lm_head and the embedding source has none",
}


def _vocab_fits(rows: int, vocab_size: int) -> bool:
    return rows == vocab_size or (vocab_size > rows and vocab_size == pad_vocab_size(rows))


def _choose_embedding(choice: str, parts: dict[str, MappedCheckpoint], vocab_size: int) -> str:
    if choice not in EMBEDDING_CHOICES:
        raise ValueError(f"embedding={choice!r}; use one of {list(EMBEDDING_CHOICES)}")
    if choice == "none":
        return "none"
    if choice != "auto":
        if choice not in parts:
            raise ValueError(f"embedding={choice!r} but no {choice}= checkpoint was given")
        if parts[choice].embedding is None:
            raise WeightMismatchError(f"embedding={choice!r} but the {choice} checkpoint has no token embedding")
        return choice
    fitting = [name for name, part in parts.items()
               if part.embedding is not None and _vocab_fits(part.embedding.tensor.shape[0], vocab_size)]
    if not fitting:
        sizes = {name: part.embedding.tensor.shape[0] for name, part in parts.items() if part.embedding is not None}
        raise WeightMismatchError(
            f"no checkpoint's token embedding fits config.vocab_size={vocab_size} (vocabularies: {sizes}); "
            "set vocab_size to one of them (or to it rounded up to a multiple of 8), "
            "or pass embedding='none' to start the embedding from scratch")
    return "gpt2" if "gpt2" in fitting else fitting[0]  # the transformer that makes the logits read it


def _copy_rows(model_param: torch.Tensor, source: Source, target: str, report: LoadReport, config) -> None:
    rows, vocab = source.tensor.shape[0], model_param.shape[0]
    if not _vocab_fits(rows, vocab):
        raise WeightMismatchError(
            f"{source.description} has {rows} rows but config.vocab_size={vocab}; set vocab_size={rows} "
            f"(or {pad_vocab_size(rows)}, padded to a multiple of 8)")
    if source.tensor.shape[1:] != model_param.shape[1:]:
        raise WeightMismatchError(f"{source.description} has shape {tuple(source.tensor.shape)}, which does "
                                  f"not fit {target} {tuple(model_param.shape)}")
    model_param[:rows].copy_(source.tensor)
    if rows < vocab:
        report.loaded[f"{target}[:{rows}]"] = source.description
        report.initialised[f"{target}[{rows}:{vocab}]"] = (
            f"vocab padding {rows} -> {vocab} (multiple of 8): new rows ~ N(0, {config.initializer_range})")
    else:
        report.loaded[target] = source.description


def _copy(params: dict[str, torch.Tensor], target: str, source: Source, report: LoadReport) -> None:
    param = params[target]
    if tuple(source.tensor.shape) != tuple(param.shape):
        raise WeightMismatchError(f"{source.description} has shape {tuple(source.tensor.shape)} but {target} "
                                  f"has {tuple(param.shape)}")
    param.copy_(source.tensor)
    report.loaded[target] = source.description


def _load_positions(model, gpt2: MappedCheckpoint | None, report: LoadReport) -> None:
    config = model.config
    if gpt2 is None or gpt2.positions is None:
        return
    if model.wpe is None:
        report.skipped[gpt2.positions.description] = "config.position='rope' (rotary positions, no table)"
        return
    table, wanted = gpt2.positions.tensor, config.max_position_embeddings
    if table.shape[0] < wanted:
        raise WeightMismatchError(f"{gpt2.positions.description} has {table.shape[0]} positions but "
                                  f"config.max_position_embeddings={wanted}; set it <= {table.shape[0]}")
    model.wpe.weight.copy_(table[:wanted])
    suffix = f" (first {wanted} of {table.shape[0]} rows)" if wanted < table.shape[0] else ""
    report.loaded["wpe.weight"] = gpt2.positions.description + suffix


def _map_parts(config: StrideHybridConfig, gpt2: Any, mamba: Any, revision) -> dict[str, MappedCheckpoint]:
    parts = {}
    if gpt2 is not None:
        parts["gpt2"] = map_gpt2(load_checkpoint(gpt2, revision), config)
    if mamba is not None:
        parts["mamba"] = map_mamba(load_checkpoint(mamba, revision), config)
    return parts


def from_components(config: StrideHybridConfig, gpt2: Any = None, mamba: Any = None, report: bool = True,
                    embedding: str = "auto", revision: str | None = None) -> StrideHybridModel:
    """A StrideHybridModel whose transformer starts from GPT-2 and whose SSM starts from Mamba.

    gpt2 / mamba: a local directory or weights file, a hub repo id (online), an nn.Module or a
    state dict. embedding: 'auto' (the checkpoint whose vocabulary fits config.vocab_size,
    GPT-2 first), 'gpt2', 'mamba' or 'none'. The returned model has `.load_report`; with
    report=True its summary is printed. Shape mismatches raise WeightMismatchError (a ValueError).
    """
    if not isinstance(config, StrideHybridConfig):
        raise TypeError(f"config must be a StrideHybridConfig, got {type(config).__name__}")
    if gpt2 is None and mamba is None:
        raise ValueError("pass gpt2= and/or mamba= (a local directory, hub repo id, module or state dict)")
    model = StrideHybridModel(config)
    has_ssm = hasattr(model, "ssm")
    if mamba is not None and has_ssm and config.ssm_type != "mamba":
        raise WeightMismatchError(f"config.ssm_type={config.ssm_type!r} cannot take Mamba weights; "
                                  "use ssm_type='mamba'")
    parts = _map_parts(config, gpt2, mamba, revision)
    chosen = _choose_embedding(embedding, parts, config.vocab_size)
    if "mamba" in parts and not has_ssm and embedding != "mamba":
        raise WeightMismatchError(
            f"mamba= was given but this config has no SSM memory (arch={config.arch!r}, "
            f"n_ssm_outputs={config.n_ssm_outputs}); use arch='smt' with n_ssm_outputs > 0, or pass "
            "embedding='mamba' to take only Mamba's token embedding")
    load_report = LoadReport(embedding=chosen)
    if chosen == "mamba" and "gpt2" in parts:
        load_report.notes.append("the transformer comes from GPT-2 but the embedding from Mamba: they were "
                                 "trained in different spaces (and tokenizers), so fine-tune before use")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for part in parts.values():
            load_report.notes += part.notes
            load_report.skipped.update(part.skipped)
            if part.family == "mamba" and not has_ssm:
                load_report.skipped.update({s.description: "the config has no SSM memory"
                                            for s in part.tensors.values()})
                continue
            for target, source in part.tensors.items():
                _copy(params, target, source, load_report)
            for target, why in part.zero_init.items():
                params[target].zero_()
                load_report.initialised[target] = why
        for name, part in parts.items():
            if part.embedding is not None and name != chosen:
                load_report.skipped[part.embedding.description] = f"embedding={chosen!r} was used"
        if chosen != "none":
            source = parts[chosen]
            _copy_rows(model.wte.weight, source.embedding, "wte.weight", load_report, config)
            if not config.tie_embeddings:
                head = source.lm_head or Source(source.embedding.tensor,
                                                source.embedding.description + " (tied in the source)")
                _copy_rows(model.lm_head.weight, head, "lm_head.weight", load_report, config)
        _load_positions(model, parts.get("gpt2"), load_report)
    _record_new(params, load_report)
    if config.tie_embeddings:
        load_report.notes.append("lm_head.weight is tied to wte.weight")
    model.load_report = load_report
    if report:
        print(load_report.summary())
    return model


def _record_new(params: dict[str, torch.Tensor], report: LoadReport) -> None:
    covered = {key.split("[")[0] for key in [*report.loaded, *report.initialised]}
    for name in params:
        if name in covered:
            continue
        reason = next((why for prefix, why in NEW_PART_REASONS.items() if name.startswith(prefix)),
                      "no counterpart in the given checkpoints")
        report.initialised[name] = reason
