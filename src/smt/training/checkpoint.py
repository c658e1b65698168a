"""Training checkpoints: written atomically, verified on load, pruned to the last K and the best.

run_dir/checkpoints/
  step_000100/
    config.json          the model directory (smt.model_directory: from_pretrained reads it)
    model.safetensors
    tokenizer.json       the run's tokenizer
    optimizer.pt         optimizer + scheduler + torch RNG states (plain tensors; weights_only load)
    stream_state.safetensors   stream mode: the carried model state of every batch row
    training.json        step, data position, configs, metrics and a sha256 of every file above
  best.json              which step directory had the lowest validation loss

A checkpoint is staged in a hidden temporary directory and renamed into place, so a step
directory is either complete or absent; training.json is written last and lists checksums, so a
truncated or altered file is detected on load. Loading never unpickles code: safetensors, and
torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from smt.atomic_files import staging_leftovers
from smt.errors import disk_full_message, is_disk_full
from smt.model_directory import (
    TRAINING_FILE,
    CheckpointError,
    load_weights,
    save_model_dir,
    sha256_file,
    shared_mode,
    verify_training_record,
    write_json_atomic,
)

BEST_FILE = "best.json"
STEP_DIR = re.compile(r"^step_(\d{6,})$")
FORMAT_VERSION = 1


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete step directories (those with training.json), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / TRAINING_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def best_checkpoint(root: Path) -> Path | None:
    file = root / BEST_FILE
    if not file.is_file():
        return None
    try:
        name = json.loads(file.read_text(encoding="utf-8"))["step_dir"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{file} is unreadable ({error}); delete it to fall back to the latest") from error
    if not isinstance(name, str) or not STEP_DIR.match(name):
        raise CheckpointError(f"{file} names {name!r}, not a step directory of this run (step_NNNNNN); "
                              "delete it to fall back to the latest")
    return root / name


@dataclass
class CheckpointPayload:
    """What a checkpoint holds besides the model."""

    step: int
    training_state: dict  # JSON: data position, configs, metrics
    optimizer_state: dict  # torch objects: optimizer, scheduler, RNG
    stream_state: dict[str, Tensor] | None = None


def save_checkpoint(root: Path, model: nn.Module, payload: CheckpointPayload, tokenizer: Any = None,
                    keep_last: int = 3, val_loss: float | None = None) -> Path:
    """Write step_NNNNNN atomically, update best.json, prune old checkpoints; returns the directory."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(payload.step)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    os.chmod(staging, shared_mode(directory=True))
    try:
        save_model_dir(model, staging, tokenizer, **model_card_facts(payload.training_state, payload.step, val_loss))
        torch.save(payload.optimizer_state, staging / "optimizer.pt")
        if payload.stream_state is not None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in payload.stream_state.items()}
            save_file(tensors, str(staging / "stream_state.safetensors"))
        files = sorted(p.name for p in staging.iterdir())
        for name in files:
            os.chmod(staging / name, shared_mode())  # safetensors writes 0600
            with open(staging / name, "rb+") as handle:
                os.fsync(handle.fileno())
        record = {**payload.training_state, "format_version": FORMAT_VERSION, "step": payload.step,
                  "val_loss": val_loss, "checksums": {name: sha256_file(staging / name) for name in files}}
        write_json_atomic(staging / TRAINING_FILE, record)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it whole
            trash = root / f".{final.name}.old-{os.getpid()}"
            os.replace(final, trash)
            os.replace(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException as error:
        full = is_disk_full(error, staging)  # before the staging folder's space is freed again
        shutil.rmtree(staging, ignore_errors=True)
        if full:
            raise CheckpointError(_disk_full_message(root, final.name, model, payload)) from error
        raise
    if val_loss is not None:
        _update_best(root, final, val_loss)
    prune_checkpoints(root, keep_last)
    return final


# the training settings a model card shows (TrainingConfig fields), in this order
CARD_TRAINING_FIELDS = ("batch_size", "gradient_accumulation_steps", "seq_len", "batching", "lr", "min_lr_ratio",
                        "warmup_steps", "weight_decay", "beta1", "beta2", "grad_clip", "max_steps", "epochs",
                        "dtype", "seed", "data_seed")


def model_card_facts(training_state: dict, step: int | None, val_loss: float | None) -> dict[str, Any]:
    """save_model_dir's model-card arguments for a checkpoint: evaluation (the validation loss and
    perplexity at this step, when evaluated), training (the step, tokens seen, processes and the
    settings of CARD_TRAINING_FIELDS) and datasets (run.train_data, as smt.data.sources.card_name
    names them), from what training.json holds; whatever it lacks is left out."""
    import math

    from smt.data.sources import card_name

    config = training_state.get("config") if isinstance(training_state.get("config"), dict) else {}
    settings = config.get("training") if isinstance(config.get("training"), dict) else {}
    run = config.get("run") if isinstance(config.get("run"), dict) else {}
    trainer = training_state.get("trainer") if isinstance(training_state.get("trainer"), dict) else {}
    training = {"steps": step, "tokens seen": trainer.get("tokens_seen"), "processes": training_state.get("world_size"),
                **{name: settings.get(name) for name in CARD_TRAINING_FIELDS}}
    training = {name: value for name, value in training.items() if value is not None}
    data = run.get("train_data")
    datasets = [card_name(source) for source in ([data] if isinstance(data, str) else data or [])]
    evaluation = None
    if isinstance(val_loss, (int, float)) and math.isfinite(val_loss):
        evaluation = {"val_loss": round(float(val_loss), 4), "val_ppl": round(math.exp(min(float(val_loss), 700)), 3)}
    return {"evaluation": evaluation, "training": training or None, "datasets": datasets or None}


def _disk_full_message(root: Path, name: str, model: nn.Module, payload: CheckpointPayload) -> str:
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    optimizer = sum(t.numel() * t.element_size() for t in _tensors(payload.optimizer_state))
    needed = weights + optimizer
    kept = list_checkpoints(root)
    return (f"{disk_full_message(root)}, then resume (saving {name} needs about {needed:,} bytes). "
            "Nothing was half-written: "
            + (f"the last good checkpoint, {kept[-1].name}, is intact" if kept else "no earlier checkpoint exists"))


def _tensors(value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _update_best(root: Path, candidate: Path, val_loss: float) -> None:
    file = root / BEST_FILE
    current = None
    if file.is_file():
        try:
            current = json.loads(file.read_text(encoding="utf-8"))
        except ValueError:
            current = None
    alive = current is not None and (root / str(current.get("step_dir"))).is_dir()
    if not alive or val_loss <= float(current["val_loss"]) or current["step_dir"] == candidate.name:
        write_json_atomic(file, {"step_dir": candidate.name, "val_loss": val_loss})


def checkpoint_staging(root: Path) -> list[Path]:
    """What killed saves leave in checkpoints/: staging folders, replaced step folders awaiting
    deletion, temporary best.json files (never read, only disk)."""
    if not root.is_dir():
        return []
    return [*root.glob(".step_*.tmp-*"), *root.glob(".step_*.old-*"), *staging_leftovers(root, (BEST_FILE,))]


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step directories, never the best one, and what killed
    saves left (checkpoint_staging)."""
    for stale in checkpoint_staging(root):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    best = best_checkpoint(root)
    checkpoints = list_checkpoints(root)
    for path in checkpoints[: max(0, len(checkpoints) - keep_last)]:
        if best is None or path.name != best.name:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class LoadedCheckpoint:
    directory: Path
    training_state: dict
    optimizer_state: dict
    stream_state: dict[str, Tensor] | None


def verify_checkpoint(directory: Path) -> dict:
    """training.json of a step directory, after checking every listed file against its checksum."""
    return verify_training_record(Path(directory))


def load_checkpoint(directory: Path, model: nn.Module | None = None) -> LoadedCheckpoint:
    """Verify a step directory and read it; loads the weights into `model` when given."""
    from safetensors.torch import load_file

    directory = Path(directory)
    record = verify_checkpoint(directory)
    if model is not None:
        load_weights(model, directory, verify=False)  # just verified
    try:
        optimizer_state = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad pickles
        raise CheckpointError(f"{directory / 'optimizer.pt'} cannot be loaded safely: {error}") from error
    stream_file = directory / "stream_state.safetensors"
    stream_state = load_file(str(stream_file)) if stream_file.is_file() else None
    return LoadedCheckpoint(directory, record, optimizer_state, stream_state)


def export_model(path: str | Path, out: str | Path, prefer_best: bool = True) -> tuple[Path, dict]:
    """Write the model of a run (its best checkpoint when `prefer_best` and known, else its latest),
    a checkpoints/ directory or a step directory as a plain model directory `out`: the weights,
    config, tokenizer and model card (with the step's training settings, datasets and validation
    loss), without the optimizer state, stream state and training.json; AutoModelForCausalLM and
    push_to_hub take it. `out` must be new, empty, or a model directory exported before (replaced).
    Returns (the step directory exported, its training.json record, {} for a model directory)."""
    from smt.model_directory import CONFIG_FILE, load_tokenizer
    from smt.models import load_model
    from smt.pretrained.sharing import is_model_dir

    step = resolve_checkpoint(path, prefer_best)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; export into a new directory")
    if out.is_dir() and any(out.iterdir()) and not (is_model_dir(out) and not (out / TRAINING_FILE).exists()):
        what = "a training step directory" if (out / TRAINING_FILE).exists() else (
            "a run directory" if (out / "checkpoints").exists() else "files that are not an SMT model directory")
        raise FileExistsError(f"{out} holds {what}; export into a new or empty directory "
                              f"(or over a model directory exported before, whose {CONFIG_FILE} is replaced)")
    if out.resolve() == step.resolve():
        raise ValueError(f"{out} is the checkpoint being exported; choose another directory")
    record = verify_training_record(step) if (step / TRAINING_FILE).is_file() else {}
    model = load_model(step)  # verified (again) as every load is
    facts = model_card_facts(record, record.get("step"), record.get("val_loss")) if record else {}
    save_model_dir(model, out, load_tokenizer(step), **facts)
    return step, record


def resolve_checkpoint(path: str | Path, prefer_best: bool = True) -> Path:
    """A step directory from: a step directory, a checkpoints/ directory or a run directory
    (its best checkpoint when `prefer_best` and known, else its latest)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path not found: {path}")
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    best = best_checkpoint(root) if prefer_best else None
    if best is not None and best.is_dir():
        return best
    found = list_checkpoints(root)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {path}: expected a step_NNNNNN directory with "
                                "training.json, or a model directory with config.json + model.safetensors")
    return found[-1]
