"""The model directory: the one on-disk format of every SMT model and baseline.

    config.json          StrideHybridConfig.to_dict() + model_type, smt_format_version, architectures
    model.safetensors    the weights, tied tensors once (pytorch_model.bin with safe_serialization=False)
    tokenizer.json       the tokenizer, when one was given
    checksums.json       the sha256 of every file above, written last

`save_pretrained`, every training checkpoint (a step directory adds optimizer.pt, the stream state
and training.json, which then holds the checksums) and the baselines all write it through
`save_model_dir`; every loader (from_pretrained, `smt generate` / `smt eval`, `run.init_from`,
resume, the task trainer) reads it through `read_config`, `verify_model_files` and `load_weights`.
This module depends on nothing of smt but the config, so the models can use it (and the
`pretrained` and `training` packages build on it). Loading never unpickles code: safetensors, or
torch.load(weights_only=True).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from smt.config import ConfigError, StrideHybridConfig

MODEL_TYPE = "smt_stride_hybrid"
FORMAT_VERSION = 1
MARKERS = ("model_type", "smt_format_version", "architectures")
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKSUM_FILE = "checksums.json"  # the integrity record of a model directory
TRAINING_FILE = "training.json"  # the integrity record of a training step directory (smt.training.checkpoint)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_METADATA = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "vocab.json", "merges.txt", "generation_config.json"]


class CheckpointError(ValueError):
    """A checkpoint or model directory that is missing, incomplete, corrupted, or from a different configuration."""


class WeightMismatchError(CheckpointError):
    """A checkpoint whose shapes or names cannot fit the configured model."""


# ----------------------------------------------------------------- files
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then rename over `path`."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def resolve_directory(path_or_repo: str | Path, revision: str | None = None) -> Path:
    """A local directory (or weights file) as is; otherwise a hub repo id, downloaded (online only).

    From the hub only configs, tokenizer files and one weights format are fetched: safetensors
    when the repo has them, else PyTorch `.bin`.
    """
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub repos only, but {path} is a local path; "
                             "drop revision=")
        return path
    text = str(path_or_repo)
    if not REPO_ID.match(text) or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{text}: no such file or directory (and not a hub repo id like 'gpt2' "
                                "or 'state-spaces/mamba-130m-hf')")
    try:
        local = _download(text, revision, HUB_METADATA + ["*.safetensors", "*.safetensors.index.json"])
        if not any(local.glob("*.safetensors")):
            local = _download(text, revision, HUB_METADATA + ["pytorch_model*.bin", "*.bin.index.json"])
    except Exception as error:  # offline, unknown repo, gated repo, ...
        raise FileNotFoundError(
            f"{text}: not a local directory, and downloading it from the Hugging Face hub failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Offline, "
            "pass a local directory holding config.json and model.safetensors or pytorch_model.bin"
        ) from error
    return local


def _download(repo_id: str, revision: str | None, allow_patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))


# --------------------------------------------------------------- weights
def tensors_to_save(model: nn.Module) -> dict[str, Tensor]:
    """The state dict on CPU with shared (tied) tensors kept once, under their first name
    (`wte.weight`: the tied lm_head is not stored)."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        tensors[name] = tensor.detach().cpu().contiguous()
    return tensors


def find_weights_file(directory: Path) -> Path:
    """The weights file of a directory: safetensors first, then PyTorch .bin."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    singles = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if len(singles) == 1:
        return singles[0]
    raise FileNotFoundError(f"{directory}: no weights found; expected one of {list(WEIGHT_FILES)}")


def load_weights_file(file: Path) -> dict[str, Tensor]:
    """Named tensors from a .safetensors file, a shard index, or a plain-tensor .bin / .pt."""
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{file} cannot be read (truncated or corrupted?): {error}; re-save or "
                                  "re-download the model") from error
    if file.suffix in (".bin", ".pt", ".pth"):
        return _load_bin(file)
    if file.name.endswith(".index.json"):
        shards = sorted(set(read_json(file).get("weight_map", {}).values()))
        if not shards:
            raise ValueError(f"{file}: a shard index without a weight_map")
        tensors: dict[str, Tensor] = {}
        for shard in shards:
            tensors.update(load_weights_file(file.parent / shard))
        return tensors
    raise ValueError(f"{file}: unknown weights format; use .safetensors or .bin")


def _load_bin(file: Path) -> dict[str, Tensor]:
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError for anything beyond plain tensors
        raise ValueError(f"{file}: cannot be read as a plain tensor checkpoint with weights_only=True "
                         f"({type(error).__name__}); convert it to safetensors or re-save only the "
                         "state dict") from error
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{file}: expected a mapping of names to tensors (a state dict)")
    return dict(data)


# ------------------------------------------------------------- tokenizer
def save_tokenizer(tokenizer: Any, directory: Path) -> None:
    """Write `tokenizer` into `directory` (a tokenizers.Tokenizer, a Hugging Face tokenizer,
    or any object with .save(directory), such as smt.data.tokenizer.SMTTokenizer)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        tokenizer.save(str(directory / TOKENIZER_FILE))
    elif hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(directory))
    elif callable(getattr(tokenizer, "save", None)):
        tokenizer.save(directory)
    else:
        raise TypeError(f"cannot save a tokenizer of type {type(tokenizer).__name__}: pass a "
                        "tokenizers.Tokenizer or an object with .save(directory)")
    if not (directory / TOKENIZER_FILE).is_file():
        raise ValueError(f"saving the tokenizer wrote no {TOKENIZER_FILE} into {directory}; "
                         "pass a tokenizer that saves in the tokenizers format")


def load_tokenizer(directory: Path) -> Any | None:
    """The tokenizer saved in `directory` (an SMTTokenizer, smt.data.tokenizer), or None when there is none."""
    file = directory / TOKENIZER_FILE
    if not file.is_file():
        return None
    from smt.data.tokenizer import load_tokenizer as load_smt_tokenizer

    return load_smt_tokenizer(file)


# ------------------------------------------------------------------ save
def save_model_dir(model: nn.Module, directory: str | Path, tokenizer: Any = None,
                   safe_serialization: bool = True) -> None:
    """Write config.json, the weights (model.safetensors, or pytorch_model.bin when
    safe_serialization=False), the tokenizer when given, and checksums.json last."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    config = {**model.config.to_dict(), "model_type": MODEL_TYPE, "smt_format_version": FORMAT_VERSION,
              "architectures": [type(model).__name__]}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    weights = tensors_to_save(model)
    stale = "pytorch_model.bin" if safe_serialization else "model.safetensors"
    (directory / stale).unlink(missing_ok=True)  # never leave two disagreeing weight files
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(weights, str(directory / "model.safetensors"),
                  metadata={"format": "pt", "smt_format_version": str(FORMAT_VERSION)})
    else:
        torch.save(weights, directory / "pytorch_model.bin")
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory)
    write_checksums(directory)


def write_checksums(directory: Path) -> None:
    """checksums.json: the sha256 of every file in a model directory; written last, so a save
    that is cut off leaves a directory that fails verification instead of loading half-written."""
    files = sorted(p.name for p in directory.iterdir()
                   if p.is_file() and p.name != CHECKSUM_FILE and not p.name.startswith("."))
    write_json_atomic(directory / CHECKSUM_FILE, {"sha256": {name: sha256_file(directory / name) for name in files}})


# ---------------------------------------------------------------- verify
def verify_model_files(directory: str | Path) -> None:
    """Check a model or step directory against its integrity record, when it has one: training.json
    (a training step) or checksums.json (a model directory). Directories with neither (saved by
    older versions, or files copied by hand) are not checked."""
    directory = Path(directory)
    if (directory / TRAINING_FILE).is_file():
        verify_training_record(directory)
        return
    file = directory / CHECKSUM_FILE
    if not file.is_file():
        return
    try:
        items = list(json.loads(file.read_text(encoding="utf-8"))["sha256"].items())
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{file} is unreadable ({error}); re-save the model, or delete {file.name} to "
                              "load it unchecked") from error
    check_files(directory, dict(items), missing=f"{file.name} lists it; copy the whole directory",
                changed=f"was changed or corrupted after it was saved (its sha256 does not match {file.name}); "
                        f"re-save the model, or if you edited it on purpose, delete {file.name} to load it "
                        "unchecked")


def verify_training_record(directory: Path) -> dict:
    """training.json of a step directory, after checking every file it lists against its checksum."""
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    file = directory / TRAINING_FILE
    if not file.is_file():
        raise CheckpointError(f"{file} is missing: the checkpoint is incomplete (an interrupted save?)")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        checksums = record["checksums"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{file} is unreadable or incomplete ({error})") from error
    check_files(directory, checksums, missing="the checkpoint is incomplete",
                changed=f"is corrupted or truncated: its sha256 does not match {file.name}; move this step "
                        "directory away and resume from an older one (smt train --config ... --resume step_NNNNNN)")
    return record


def check_files(directory: Path, checksums: dict[str, str], missing: str, changed: str) -> None:
    """Every file of `checksums` present with its sha256, else a CheckpointError naming it."""
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: {missing}")
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path} {changed}")


# ------------------------------------------------------------------ load
def read_config(directory: Path, **overrides: Any) -> StrideHybridConfig:
    """The StrideHybridConfig of a model or step directory (validated), with overrides applied."""
    file = Path(directory) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; is this a directory written by save_pretrained "
                                "or a training checkpoint?")
    data = read_json(file)
    model_type = data.get("model_type")
    if model_type != MODEL_TYPE:
        foreign = model_type in ("gpt2", "mamba") or ("d_model" in data and "n_layer" in data)
        hint = (" To start from GPT-2 or Mamba weights use smt.pretrained.from_components(config, "
                "gpt2=..., mamba=...)." if foreign else "")
        raise ValueError(f"{file}: not an SMT model (model_type={model_type!r}, expected {MODEL_TYPE!r}).{hint}")
    version = data.get("smt_format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{file}: smt_format_version={version!r}, this smt reads version {FORMAT_VERSION}; "
                         "upgrade smt or re-save the model")
    fields = {k: v for k, v in data.items() if k not in MARKERS}
    try:
        return StrideHybridConfig.from_dict({**fields, **overrides})
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{file}: {error}") from error


def load_weights(model: nn.Module, directory: str | Path, verify: bool = True) -> None:
    """Load the directory's weights into `model`: every tensor present with its shape (a tied
    tensor stored once counts as present), else a WeightMismatchError naming what differs. With
    `verify`, the directory's integrity record is checked first (verify_model_files)."""
    directory = Path(directory)
    if verify:
        verify_model_files(directory)
    file = find_weights_file(directory)
    tensors = load_weights_file(file)
    expected = {name: tuple(t.shape) for name, t in tensors_to_save(model).items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(model.state_dict()))
    wrong = [f"{n}: file {tuple(tensors[n].shape)} vs model {expected[n]}"
             for n in sorted(set(expected) & set(tensors)) if tuple(tensors[n].shape) != expected[n]]
    problems = [f"{what} {names[:6]}" for what, names in
                (("missing tensors", missing), ("unexpected tensors", unexpected), ("shape mismatches", wrong))
                if names]
    if problems:
        raise WeightMismatchError(f"{file} does not fit the model: {'; '.join(problems)}. The weights come from "
                                  "another model config (an edited config.json, or an override that changes shapes)")
    model.load_state_dict(tensors, strict=False)  # a tied lm_head is absent from the file; checked above
