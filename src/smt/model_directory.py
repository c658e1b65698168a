"""The model directory: the one on-disk format of every SMT model and baseline.

    config.json          StrideHybridConfig.to_dict() + model_type, smt_format_version, architectures
                         (SMTForCausalLM), auto_map (transformers: AutoConfig / AutoModelForCausalLM -> the two
                         files below)
    model.safetensors    the weights, tied tensors once (pytorch_model.bin with safe_serialization=False;
                         shards + model.safetensors.index.json with max_shard_size)
    tokenizer.json       the tokenizer, when one was given
    tokenizer_config.json  with a tokenizer: its class for transformers' AutoTokenizer, eos and pad tokens
    generation_config.json the model's generation defaults (eos / bos / pad ids) for transformers' generate
    configuration_smt.py, modeling_smt.py  one import each from smt.hf (trust_remote_code=True); without
                         smt.hf, an ImportError that says `pip install stride-memory`
    README.md            the model card: license, configuration, parameter counts, training settings,
                         datasets and evaluation numbers when given
    checksums.json       the sha256 of every file above, written last (saved without a tokenizer, it lets
                         one be added afterwards, unchecked: tokenizer.save_pretrained(dir))

`save_pretrained`, every training checkpoint (a step directory adds optimizer.pt, the stream state
and training.json, which then holds the checksums) and the baselines all write it through
`save_model_dir`; every loader (from_pretrained, `smt generate` / `smt eval`, `run.init_from`,
resume, the task trainer) reads it through `read_config`, `verify_model_files` and `load_weights`.
This module depends on nothing of smt but the config (and the tokenizer's end-of-document token, and the
distribution's name),
so the models can use it (and the `pretrained`, `training` and `hf` packages build on it).
`push_to_hub` uploads a model directory with huggingface_hub (online only). Loading never
unpickles code: safetensors, or torch.load(weights_only=True).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import Tensor, nn

from smt.atomic_files import shared_mode, write_json_atomic
from smt.config import ConfigError, StrideHybridConfig
from smt.distribution import DISTRIBUTION, IMPORT_NAME, NAME_CLASH, install

MODEL_TYPE = "smt_stride_hybrid"
FORMAT_VERSION = 1
# config.json keys that are not StrideHybridConfig fields (read_config skips them)
MARKERS = ("model_type", "smt_format_version", "architectures", "auto_map")
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKSUM_FILE = "checksums.json"  # the integrity record of a model directory
TRAINING_FILE = "training.json"  # the integrity record of a training step directory (smt.training.checkpoint)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
MODEL_CARD_FILE = "README.md"
# what an integrity record must list when present (must_be_recorded)
TOKENIZER_FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, "vocab.json", "merges.txt")
RECORDED_FILES = (CONFIG_FILE, *TOKENIZER_FILES)
RECORDED_SUFFIXES = (".safetensors", ".bin", ".pt", ".index.json")
# transformers' trust_remote_code entry points: two files beside the weights, each one import from smt.hf
AUTO_MAP = {"AutoConfig": "configuration_smt.SMTConfig", "AutoModelForCausalLM": "modeling_smt.SMTForCausalLM"}
# config.json's `architectures`: the transformers class AutoModelForCausalLM resolves (every arch)
ARCHITECTURE = AUTO_MAP["AutoModelForCausalLM"].rsplit(".", 1)[1]
LICENSE = "mit"  # the model card's license: stride-memory's own (pyproject.toml)
# the model card's install line above its code block, and the one cards had before the distribution was named
# stride-memory (push_to_hub brings such a card up to date)
CARD_INSTALL = f"With the `{DISTRIBUTION}` distribution installed (`{install()}`; it imports as `{IMPORT_NAME}`):"
OLD_CARD_INSTALL = "With the smt package installed:"
OLD_CARD_LICENSE = ", as the smt package."
# weight files save_model_dir writes (one file, or shards and their index): a save replaces them all
WEIGHT_NAMES = re.compile(r"^(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)$|"
                          r"^(model\.safetensors|pytorch_model\.bin)\.index\.json$")


def _remote_code(auto_class: str, module: str, name: str) -> str:
    """A remote-code shim: one import from smt.hf, inside a try (transformers' check_imports skips imports in a
    try, so it does not answer a missing smt with its own advice to install the `smt` distribution: another project):
    where smt.hf cannot be found, an ImportError that names the distribution to install."""
    missing = (f"{name} is in the {DISTRIBUTION} distribution (the Stride Memory Transformer, imported as "
               f"`{IMPORT_NAME}`), which this model needs: {install()}. {NAME_CLASH}")
    return (f'"""The {auto_class} entry point of an SMT model directory (transformers, trust_remote_code=True).\n\n'
            f"{name} lives in the {DISTRIBUTION} distribution (the Stride Memory Transformer), imported as "
            f"`{IMPORT_NAME}`:\n`{install()}` to load this model (not the `{IMPORT_NAME}` distribution: that is the "
            f"unrelated Surrogate\nModeling Toolbox, which also imports as `{IMPORT_NAME}` and cannot be installed "
            f"alongside).\nWith {DISTRIBUTION} installed, `import smt.hf` registers it, and trust_remote_code is "
            f'not needed.\n"""\n\n'
            f"try:\n"
            f"    from {module} import {name}\n"
            f"except ModuleNotFoundError as error:  # no smt, or an smt without smt.hf (another project's)\n"
            f"    if error.name not in {_parents(module)!r}:\n"
            f"        raise\n"
            f"    raise ImportError({missing!r}) from error\n\n"
            f'__all__ = ["{name}"]\n')


def _parents(module: str) -> tuple[str, ...]:
    """"smt.hf.modeling" -> ("smt", "smt.hf", "smt.hf.modeling"): the names a ModuleNotFoundError for it can carry."""
    parts = module.split(".")
    return tuple(".".join(parts[:i]) for i in range(1, len(parts) + 1))


REMOTE_CODE = {"configuration_smt.py": _remote_code("AutoConfig", "smt.hf.configuration", "SMTConfig"),
               "modeling_smt.py": _remote_code("AutoModelForCausalLM", "smt.hf.modeling", "SMTForCausalLM")}
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


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    except UnicodeDecodeError as error:
        byte = error.object[error.start:error.start + 1]
        raise ValueError(f"{file}: not UTF-8 text (byte {error.start} is {byte!r}; "
                         "was it saved as latin-1?); save it as UTF-8, e.g. iconv -f latin1 -t utf-8") from error
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
                   safe_serialization: bool = True, evaluation: Mapping[str, Any] | None = None,
                   generation: Mapping[str, Any] | None = None, training: Mapping[str, Any] | None = None,
                   datasets: Sequence[str] | None = None, max_shard_size: int | str | None = None,
                   state_dict: Mapping[str, Tensor] | None = None) -> None:
    """Write config.json (with transformers' auto_map), the weights (model.safetensors, or
    pytorch_model.bin when safe_serialization=False), the tokenizer when given (with
    tokenizer_config.json), generation_config.json, the two remote-code files, the model card
    README.md, and checksums.json last.

    The model card names the license (MIT) and, when given, the `evaluation` numbers (e.g.
    {"val_loss": 3.2}), the `training` settings (e.g. {"steps": 600, "lr": 6e-4}) and the `datasets`
    it was trained on (hub ids go into the card's metadata). `max_shard_size` (bytes, or "5GB" /
    "500MB" as transformers takes it) splits weights larger than it into shards with an index
    (model-00001-of-00002.safetensors, model.safetensors.index.json); None writes one file.
    `state_dict` saves those tensors (the model's names and shapes) instead of the model's own.

    generation_config.json holds `generation` (the model's generation defaults, e.g. a transformers
    model's eos / bos / pad token ids; None values dropped), with the tokenizer's end-of-document
    token as eos and pad when a tokenizer is given and its vocabulary has one."""
    model = getattr(model, "smt_model", model)  # smt.hf.SMTForCausalLM: its native model, the same parameters
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} exists and is not a directory")
    if evaluation is not None and not isinstance(evaluation, Mapping):
        raise TypeError(f"evaluation must be a mapping of metric names to values, got {type(evaluation).__name__}")
    directory.mkdir(parents=True, exist_ok=True)
    weights = tensors_to_save(model) if state_dict is None else given_tensors(model, state_dict)
    config = {**model.config.to_dict(), "model_type": MODEL_TYPE, "smt_format_version": FORMAT_VERSION,
              "architectures": [ARCHITECTURE], "auto_map": AUTO_MAP}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for stale in directory.iterdir():  # never leave two disagreeing sets of weight files
        if WEIGHT_NAMES.match(stale.name) and stale.is_file():
            stale.unlink()
    write_weights(weights, directory, safe_serialization, max_shard_size)
    eos = None
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory)
        eos = end_of_document_token(tokenizer, directory, model.config.vocab_size)
        if not hasattr(tokenizer, "save_pretrained"):  # a transformers tokenizer wrote its own
            write_tokenizer_config(directory, eos)
    settings = {key: value for key, value in (generation or {}).items() if value is not None}
    if eos is not None:
        settings.update(eos_token_id=eos[1], pad_token_id=eos[1])
    (directory / GENERATION_CONFIG_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n",
                                                    encoding="utf-8")
    for name, code in REMOTE_CODE.items():
        (directory / name).write_text(code, encoding="utf-8")
    write_model_card(model, directory, evaluation, has_tokenizer=tokenizer is not None, training=training,
                     datasets=datasets)
    write_checksums(directory, without_tokenizer=tokenizer is None)


def given_tensors(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of `state_dict` that tensors_to_save(model) would save (a tied tensor once), on CPU;
    a ValueError when its names or shapes are not the model's."""
    expected = {name: tuple(t.shape) for name, t in tensors_to_save(model).items()}
    missing = sorted(set(expected) - set(state_dict))
    unknown = sorted(set(state_dict) - set(model.state_dict()))
    wrong = [f"{name}: {tuple(state_dict[name].shape)} vs the model's {shape}"
             for name, shape in expected.items() if name in state_dict and tuple(state_dict[name].shape) != shape]
    problems = [f"{what} {names[:6]}" for what, names in
                (("missing tensors", missing), ("tensors the model does not have", unknown),
                 ("shape mismatches", wrong)) if names]
    if problems:
        raise ValueError(f"state_dict does not fit the model: {'; '.join(problems)}; pass the model's own "
                         "state_dict (or none: the model's parameters are saved)")
    return {name: state_dict[name].detach().cpu().contiguous() for name in expected}


def write_weights(weights: dict[str, Tensor], directory: Path, safe_serialization: bool = True,
                  max_shard_size: int | str | None = None) -> None:
    """model.safetensors (pytorch_model.bin when not safe_serialization), or with `max_shard_size`
    and more weights than it, shards of at most that size (a tensor larger than it gets a shard
    of its own) and their index, in transformers' layout."""
    pattern = "model{suffix}.safetensors" if safe_serialization else "pytorch_model{suffix}.bin"
    if max_shard_size is None:
        shards, index = {pattern.format(suffix=""): weights}, None
    else:
        from huggingface_hub import split_torch_state_dict_into_shards

        if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, (int, str)):
            raise TypeError(f"max_shard_size must be a number of bytes or a size such as '5GB', got {max_shard_size!r}")
        try:
            split = split_torch_state_dict_into_shards(weights, filename_pattern=pattern,
                                                       max_shard_size=max_shard_size)
        except ValueError as error:
            raise ValueError(f"max_shard_size={max_shard_size!r}: {error}; use a number of bytes or a size such as "
                             "'5GB' or '500MB'") from error
        shards = {file: {name: weights[name] for name in names} for file, names in split.filename_to_tensors.items()}
        index = {"metadata": {**split.metadata, "smt_format_version": FORMAT_VERSION},
                 "weight_map": split.tensor_to_filename} if split.is_sharded else None
    for file, tensors in shards.items():
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(tensors, str(directory / file),
                      metadata={"format": "pt", "smt_format_version": str(FORMAT_VERSION)})
            os.chmod(directory / file, shared_mode())  # safetensors writes 0600
        else:
            torch.save(tensors, directory / file)
    if index is not None:
        name = "model.safetensors.index.json" if safe_serialization else "pytorch_model.bin.index.json"
        (directory / name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def end_of_document_token(tokenizer: Any, directory: Path, vocab_size: int) -> tuple[str, int] | None:
    """(token, id) of the end-of-document token of the tokenizer saved in `directory`: the
    tokenizer's own `eos_token` (SMTTokenizer, transformers tokenizers), else smt's EOS_TOKEN
    when the vocabulary has it; None when it has neither (or its id is beyond the model's vocabulary)."""
    from tokenizers import Tokenizer

    from smt.data.tokenizer import EOS_TOKEN

    own = getattr(tokenizer, "eos_token", None)
    token = own if isinstance(own, str) and own else EOS_TOKEN
    token_id = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).token_to_id(token)
    if token_id is None or token_id >= vocab_size:
        return None
    return token, int(token_id)


def write_tokenizer_config(directory: Path, eos: tuple[str, int] | None) -> None:
    """tokenizer_config.json: transformers' AutoTokenizer reads tokenizer.json as a
    PreTrainedTokenizerFast, with the end-of-document token as eos and pad (pad = eos: SMT has
    no padding token, and generate then never mistakes a prompt token for padding)."""
    data: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                            "model_input_names": ["input_ids", "attention_mask"]}
    if eos is not None:
        data.update(eos_token=eos[0], pad_token=eos[0])
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def parameter_counts(model: nn.Module) -> dict[str, Any]:
    """model.count_parameters() when the model has it (total and breakdown), else the total."""
    if callable(getattr(model, "count_parameters", None)):
        return model.count_parameters()
    return {"total": sum(p.numel() for p in model.parameters()), "breakdown": {}, "lm_head_tied": None}


def write_model_card(model: nn.Module, directory: Path, evaluation: Mapping[str, Any] | None = None,
                     has_tokenizer: bool = False, training: Mapping[str, Any] | None = None,
                     datasets: Sequence[str] | None = None) -> None:
    """README.md, the Hub's model card (huggingface_hub.ModelCard): its license, how to load the
    model, its configuration, its parameter counts and, when given, its training (settings and
    datasets) and evaluation numbers. Datasets that are hub ids ("owner/name") go into the card's
    metadata too."""
    from huggingface_hub import ModelCard, ModelCardData

    cfg = model.config
    counts = parameter_counts(model)
    kind = {"smt": "Stride Memory Transformer", "swa": "sliding-window transformer (SMT baseline)",
            "gpt": "full-attention transformer (SMT baseline)", "mamba": "Mamba language model (SMT baseline)"}
    datasets = list(datasets or [])
    hub_datasets = [name for name in datasets if REPO_ID.match(name) and "/" in name and not name.startswith(".")]
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation", license=LICENSE,
                         datasets=hub_datasets or None,
                         tags=["smt", "stride-memory-transformer", f"arch-{cfg.arch}", "custom_code"])
    rows = [f"| {name} | {value!r} |" for name, value in cfg.to_dict().items()]
    if cfg.arch == "mamba":
        window = "token embeddings through a stack of Mamba layers, a fixed-size state per stream"
    elif cfg.arch == "gpt":
        window = "causal attention over the whole context, a key/value cache that grows with the stream"
    else:
        memory = f"the {cfg.n_ssm_outputs} newest memory slots and " if cfg.arch == "smt" else ""
        window = (f"each token reads {memory}the {cfg.m_input_tokens} newest tokens"
                  + (f"; a memory write every {cfg.stride} tokens" if cfg.arch == "smt" else ""))
    sizes = [f"| total | {counts['total']:,} |"]
    sizes += [f"| {part} | {n:,} |" for part, n in counts.get("breakdown", {}).items()]
    if counts.get("lm_head_tied") is not None:
        sizes.append(f"| lm_head tied to the embedding | {counts['lm_head_tied']} |")
    text = [
        f"# {cfg.arch}: {kind.get(cfg.arch, cfg.arch)}", "",
        f"An SMT model directory (`model_type: {MODEL_TYPE}`, format version {FORMAT_VERSION}, arch "
        f"`{cfg.arch}`) written by `smt.model_directory.save_model_dir`: {window}.", "",
        "## Use", "",
        CARD_INSTALL, "",
        "```python",
        "from smt.models import load_model",
        "model = load_model(\"path/or/repo\")          # native: model(input_ids, state=...), step, generate",
        "",
        "from transformers import AutoModelForCausalLM" + (", AutoTokenizer, pipeline" if has_tokenizer else ""),
        "model = AutoModelForCausalLM.from_pretrained(\"path/or/repo\", trust_remote_code=True)",
    ]
    if has_tokenizer:
        text += ["tokenizer = AutoTokenizer.from_pretrained(\"path/or/repo\")",
                 "generator = pipeline(\"text-generation\", model=model, tokenizer=tokenizer)"]
    text += ["```", "",
             NAME_CLASH, "",
             "Batches with padding (an attention_mask with zeros) are refused: generate prompts of different "
             "lengths one at a time.", "",
             "## Parameters", "", "| part | parameters |", "|---|---:|", *sizes, "",
             "## Configuration", "", "| field | value |", "|---|---|", *rows, ""]
    if training or datasets:
        text += ["## Training", ""]
        if datasets:
            text += ["Data: " + ", ".join(f"`{name}`" for name in datasets), ""]
        if training:
            text += ["| setting | value |", "|---|---|", *[f"| {name} | {value} |" for name, value in training.items()],
                     ""]
    if evaluation:
        text += ["## Evaluation", "", "| metric | value |", "|---|---:|",
                 *[f"| {name} | {value} |" for name, value in evaluation.items()], ""]
    text += ["## License", "", f"{LICENSE.upper()}{_card_license()}", ""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(text))
    card.save(str(directory / MODEL_CARD_FILE))


def _card_license() -> str:
    return f", as the {DISTRIBUTION} package."


def outdated_install_advice(directory: str | Path) -> dict[str, str]:
    """The files of a model directory saved before the distribution was named stride-memory whose install advice
    is out of date, as they read now (name -> text): remote-code shims that are not REMOTE_CODE (the old ones
    imported smt.hf outside a try, so transformers answered a missing smt with `pip install` of the `smt`
    distribution: the unrelated Surrogate Modeling Toolbox), and a model card that says "the smt package" (its
    install line gets CARD_INSTALL and NAME_CLASH after the code block under it). Empty for a directory saved
    since; push_to_hub uploads these in place of the directory's own."""
    directory = Path(directory)
    updates = {}
    for name, code in REMOTE_CODE.items():
        file = directory / name
        if file.is_file() and file.read_text(encoding="utf-8") != code:
            updates[name] = code
    card = directory / MODEL_CARD_FILE
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    if OLD_CARD_INSTALL in text or OLD_CARD_LICENSE in text:
        block = re.compile(re.escape(OLD_CARD_INSTALL) + r"\n\n(```python\n.*?\n```\n)", re.DOTALL)
        new, found = block.subn(lambda m: f"{CARD_INSTALL}\n\n{m.group(1)}\n{NAME_CLASH}\n", text, count=1)
        if not found:  # the card was edited: the line alone
            new = text.replace(OLD_CARD_INSTALL, f"{NAME_CLASH}\n\n{CARD_INSTALL}")
        updates[MODEL_CARD_FILE] = new.replace(OLD_CARD_LICENSE, _card_license())
    return updates


def _stage_for_upload(directory: Path, updates: Mapping[str, str], stage: Path) -> None:
    """`stage`: `directory` as it is (each file linked, or copied where links cannot be made), with the texts of
    `updates` in place of those files and checksums.json recording them."""
    written = {*updates, CHECKSUM_FILE}
    for entry in directory.iterdir():
        if entry.name.startswith(".") or entry.name in written:
            continue
        if entry.is_dir():
            shutil.copytree(entry, stage / entry.name)
            continue
        try:
            os.symlink(entry.resolve(), stage / entry.name)
        except OSError:  # no symlinks here (Windows without the privilege)
            shutil.copy2(entry, stage / entry.name)
    for name, text in updates.items():
        (stage / name).write_bytes(text.encode("utf-8"))
    if (directory / CHECKSUM_FILE).is_file():
        record = json.loads((directory / CHECKSUM_FILE).read_text(encoding="utf-8"))
        record["sha256"].update({name: sha256_file(stage / name) for name in updates if name in record["sha256"]})
        write_json_atomic(stage / CHECKSUM_FILE, record)


def write_checksums(directory: Path, without_tokenizer: bool = False) -> None:
    """checksums.json: the sha256 of every file in a model directory; written last, so a save
    that is cut off leaves a directory that fails verification instead of loading half-written.
    `without_tokenizer`: the model was saved without a tokenizer, so tokenizer files written into the
    directory afterwards (transformers' habit: model.save_pretrained(out); tokenizer.save_pretrained(out))
    are not refused for being unrecorded (they are not checked either; everything else still is)."""
    files = sorted(p.name for p in directory.iterdir()
                   if p.is_file() and p.name != CHECKSUM_FILE and not p.name.startswith("."))
    record: dict[str, Any] = {"sha256": {name: sha256_file(directory / name) for name in files}}
    if without_tokenizer:
        record["without_tokenizer"] = True
    write_json_atomic(directory / CHECKSUM_FILE, record)


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
        record = json.loads(file.read_text(encoding="utf-8"))
        items = list(record["sha256"].items())
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{file} is unreadable ({error}); re-save the model, or delete {file.name} to "
                              "load it unchecked") from error
    added_later = TOKENIZER_FILES if record.get("without_tokenizer") is True else ()
    check_record_scope(directory, dict(items), file, may_be_unrecorded=added_later)
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
    check_record_scope(directory, checksums, file)
    check_files(directory, checksums, missing="the checkpoint is incomplete",
                changed=f"is corrupted or truncated: its sha256 does not match {file.name}; move this step "
                        "directory away and resume from an older one (smt train --config ... --resume step_NNNNNN)")
    return record


def must_be_recorded(directory: Path) -> list[str]:
    """The files of a directory its integrity record must list: the config, the weights (and a
    step's optimizer and stream state) and the tokenizer files, those present."""
    return sorted(p.name for p in directory.iterdir()
                  if p.is_file() and (p.name in RECORDED_FILES or p.name.endswith(RECORDED_SUFFIXES)))


def check_record_scope(directory: Path, checksums: Any, record: Path,
                       may_be_unrecorded: tuple[str, ...] = ()) -> None:
    """A record names only files inside its directory, as sha256 strings, and covers every file of
    must_be_recorded (but `may_be_unrecorded`): an empty or partial record would otherwise vouch for
    files it never checked."""
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise CheckpointError(f"{record} is damaged (its checksums are not a mapping of file name to sha256); "
                              "re-save the model")
    for name in checksums:
        parts = PurePosixPath(str(name)).parts
        if not name or "\\" in name or PurePosixPath(name).is_absolute() or ".." in parts:
            raise CheckpointError(f"{record} names {name!r}, which is not a file of {directory}; the record is "
                                  "damaged or forged: re-save the model or take a fresh copy")
    uncovered = [name for name in must_be_recorded(directory)
                 if name not in checksums and name not in may_be_unrecorded]
    if uncovered:
        raise CheckpointError(f"{record} does not cover {uncovered} of {directory}, so it cannot vouch for them; "
                              "re-save the model, or delete the record to load the directory unchecked")


def check_files(directory: Path, checksums: dict[str, str], missing: str, changed: str) -> None:
    """Every file of `checksums` present with its sha256, else a CheckpointError naming it."""
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: {missing}")
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path} {changed}")


# ------------------------------------------------------------------ load
STEP_NAME = re.compile(r"^step_\d{6,}$")  # a training step directory (smt.training.checkpoint)


def run_directory_hint(directory: str | Path) -> str | None:
    """What to do with a training run directory (or its checkpoints/) where a model directory is
    expected; None when `directory` is neither."""
    directory = Path(directory)
    root = directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory
    steps = sorted(p.name for p in root.iterdir() if p.is_dir() and STEP_NAME.match(p.name)) if root.is_dir() else []
    if not steps:
        return None
    return (f"{directory} is a training run directory, not a model directory: `smt eval` and `smt generate` read it "
            f"as it is (its best checkpoint, else its latest); to load it with transformers or share it, write a "
            f"plain model directory with `smt export {directory} OUT` (or load one step, e.g. {root / steps[-1]})")


def read_config(directory: Path, **overrides: Any) -> StrideHybridConfig:
    """The StrideHybridConfig of a model or step directory (validated), with overrides applied."""
    file = Path(directory) / CONFIG_FILE
    if not file.is_file():
        hint = run_directory_hint(directory)
        if hint is not None:
            raise FileNotFoundError(hint)
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


# ------------------------------------------------------------------ hub
def push_to_hub(repo_id: str, model_or_directory: nn.Module | str | Path, tokenizer: Any = None,
                evaluation: Mapping[str, Any] | None = None, *, token: str | None = None,
                private: bool | None = None, revision: str | None = None, commit_message: str | None = None,
                create_pr: bool = False) -> Any:
    """Upload a model directory (or a model, saved first with save_model_dir into a temporary
    directory, with `tokenizer` and `evaluation`) to the Hugging Face Hub repo `repo_id`, creating
    the repo when needed (huggingface_hub create_repo + upload_folder; online, with a token from
    `hf auth login` or `token=`). Returns huggingface_hub's CommitInfo."""
    import huggingface_hub

    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id) or repo_id.startswith((".", "/", "~")):
        raise ValueError(f"repo_id={repo_id!r} is not a hub repo id; use 'name' or 'user/name'")
    if isinstance(model_or_directory, nn.Module):
        with tempfile.TemporaryDirectory(prefix="smt-push-") as temporary:
            save_model_dir(model_or_directory, temporary, tokenizer, evaluation=evaluation)
            return push_to_hub(repo_id, temporary, token=token, private=private, revision=revision,
                               commit_message=commit_message, create_pr=create_pr)
    if tokenizer is not None or evaluation is not None:
        raise ValueError("tokenizer= and evaluation= apply when pushing a model; a directory is pushed as it is "
                         "(save it again with save_model_dir(model, dir, tokenizer, evaluation=...) to change them)")
    directory = Path(model_or_directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model directory")
    if (directory / TRAINING_FILE).is_file():
        raise ValueError(f"{directory} is a training step directory (optimizer state, training.json); export the "
                         f"model first: `smt export {directory} OUT` (or smt.training.checkpoint.export_model), "
                         "then push OUT")
    read_config(directory)  # an SMT model directory, else a ValueError naming what it is
    verify_model_files(directory)
    updates = outdated_install_advice(directory)
    if updates:
        warnings.warn(f"{directory} was saved before the distribution was named {DISTRIBUTION}: pushing it with "
                      f"{', '.join(sorted(updates))} as written now (they told users to install the `smt` "
                      "distribution, another project); the directory itself is left as it is", stacklevel=2)
    with tempfile.TemporaryDirectory(prefix="smt-push-") as temporary:
        folder = directory
        if updates:
            folder = Path(temporary)
            _stage_for_upload(directory, updates, folder)
            verify_model_files(folder)
        huggingface_hub.create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
        return huggingface_hub.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", token=token, revision=revision,
            commit_message=commit_message or f"Upload SMT model ({directory.name})", create_pr=create_pr,
            ignore_patterns=[".*"])
