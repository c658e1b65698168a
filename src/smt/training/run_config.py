"""The full configuration of a training run: model + training + run (data, tokenizer, outputs).

A run config file (YAML or JSON) has three sections:

    model:     StrideHybridConfig fields, optionally `preset: tiny|small|wikitext103|pg19`
    training:  TrainingConfig fields
    run:       RunConfig fields (below)

Command-line overrides are `--section.field value` or just `--field value` when the name belongs
to one section; values are parsed as YAML (`--lr 3e-4`, `--max_steps 200`, `--valid_data null`).
The resolved configuration is saved as run_dir/config.yaml and loads back unchanged.
"""

from __future__ import annotations

import codecs
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from smt.atomic_files import write_text_atomic
from smt.config import (
    ConfigError,
    StrideHybridConfig,
    TrainingConfig,
    load_mapping,
    parse_yaml,
    unknown_fields_error,
)
from smt.training.logging import TRACKERS
from smt.typed_fields import check_fields


def _load_mapping(path: str | Path) -> dict[str, Any]:
    return load_mapping(path, "a mapping with sections model/training/run")

ParallelMode = Literal["ddp", "fsdp"]
PARALLEL_MODES = get_args(ParallelMode)


@dataclass
class RunConfig:
    """Where the data comes from, which tokenizer, and where outputs go."""

    train_data: str | list[str] | None = None  # file, directory, list of paths, or a dataset name
    train_split: str | None = None  # e.g. "train" to pick train/ or wiki.train.tokens in a directory
    valid_data: str | list[str] | None = None
    valid_split: str | None = None
    valid_fraction: float | None = None  # without valid_data: the last documents of train_data
    tokenizer: str | None = None  # tokenizer.json / directory / hub name; trained when missing and
    tokenizer_vocab_size: int | None = None  # ... this is set (byte-level BPE on train_data)
    cache_dir: str | None = None  # token caches (default $SMT_CACHE_DIR or ~/.cache/smt/tokens)
    data_encoding: str = "utf-8"  # encoding of text files (e.g. latin-1); --data_encoding
    text_field: str = "text"  # the field holding the text in .jsonl files; --text_field
    extensions: str | list[str] | None = None  # a directory's file endings to read, e.g. .py,.txt (null: defaults)
    max_train_tokens: int | None = None  # use only the first tokens (quick runs, tests)
    max_valid_tokens: int | None = None
    output_dir: str = "runs/smt"
    init_from: str | dict | None = None  # see smt.pretrained.init_model
    task: str | dict | None = None  # synthetic task instead of text: a name in smt.evaluation.tasks.TASKS
    full_final_eval: bool = True  # the last evaluation reads the whole validation set
    parallel: ParallelMode = "ddp"  # with several processes: "ddp" or "fsdp" (sharded, large models)
    dist_timeout_s: int = 600  # a collective waiting longer than this ends the run with an error
    stop_grace_s: float | None = 300.0  # after SIGTERM, the step in progress may take this long (None: no limit)
    stop_handshake_s: float = 10.0  # distributed: every rank must join a stop this fast, else a peer failed
    keep_freed_memory: bool = True  # CPU runs: freed memory stays in the process (smt.training.host_memory)
    progress: bool = True
    logger: str | list[str] = "csv"  # trackers: csv (always) plus any of tensorboard, wandb, mlflow
    tensorboard: bool = False  # old switch: true adds "tensorboard" to logger
    wandb_project: str = "smt"  # the wandb project the run is logged to
    run_name: str | None = None  # the run's name in wandb and mlflow (None: the output directory's name)

    def __post_init__(self) -> None:
        check_fields(self, "run")
        self.validate()

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise ConfigError(f"run.{name}={getattr(self, name)!r}: {problem}; {fix}")

        loggers = [self.logger] if isinstance(self.logger, str) else self.logger
        if not isinstance(loggers, list) or not loggers or any(name not in TRACKERS for name in loggers):
            fail("logger", f"must be one of {list(TRACKERS)} or a list of them", "e.g. csv or [csv, wandb]")
        grace = self.stop_grace_s
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace > 0):
            fail("stop_grace_s", "must be a positive number of seconds or null", "e.g. 300")
        if not self.stop_handshake_s > 0:
            fail("stop_handshake_s", "must be a positive number of seconds", "e.g. 10")
        try:
            codecs.lookup(str(self.data_encoding))
        except LookupError:
            fail("data_encoding", "is not an encoding Python knows", "e.g. utf-8 or latin-1")
        from smt.data.sources import normalize_extensions

        try:
            normalize_extensions(self.extensions)
        except ValueError as error:
            fail("extensions", str(error).split("; ")[0], "e.g. .py,.txt (or null for the default files)")
        if not isinstance(self.text_field, str) or not self.text_field:
            fail("text_field", "must name a field of the .jsonl records", "e.g. text")
        for name in ("tokenizer_vocab_size", "max_train_tokens", "max_valid_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                fail(name, "must be an integer >= 2 or null", "e.g. 8192")
        if self.tokenizer_vocab_size is not None and self.tokenizer is None:
            fail("tokenizer_vocab_size", "a trained tokenizer needs a path to be saved at",
                 "set run.tokenizer to a directory, e.g. runs/tokenizers/bpe8k")
        if self.valid_fraction is not None:
            if self.valid_data is not None:
                fail("valid_fraction", "given together with valid_data", "use one of them")
            if not 0.0 < float(self.valid_fraction) < 1.0:
                fail("valid_fraction", "must be in (0, 1)", "e.g. 0.1")
        if self.parallel not in PARALLEL_MODES:
            fail("parallel", "unknown mode", f"use one of {list(PARALLEL_MODES)}")
        if isinstance(self.dist_timeout_s, bool) or not isinstance(self.dist_timeout_s, int) \
                or self.dist_timeout_s < 1:
            fail("dist_timeout_s", "must be a positive integer (seconds)", "e.g. 600")
        if not isinstance(self.keep_freed_memory, bool):
            fail("keep_freed_memory", "must be true or false", "e.g. true (the default)")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            fail("output_dir", "must be a non-empty path", "e.g. runs/my_run")
        if not isinstance(self.wandb_project, str) or not self.wandb_project.strip():
            fail("wandb_project", "must name a wandb project", "e.g. smt")
        if self.run_name is not None and (not isinstance(self.run_name, str) or not self.run_name.strip()):
            fail("run_name", "must be a non-empty name or null (the output directory's name)", "e.g. smt-wt103-s1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise unknown_fields_error("run", unknown, known)
        return cls(**data)


    @property
    def trackers(self) -> tuple[str, ...]:
        """The loggers asked for, tensorboard included when the old `tensorboard: true` is set."""
        names = [self.logger] if isinstance(self.logger, str) else list(self.logger)
        if self.tensorboard and "tensorboard" not in names:
            names.append("tensorboard")
        return tuple(dict.fromkeys(names))


@dataclass
class FullConfig:
    model: StrideHybridConfig = field(default_factory=StrideHybridConfig.tiny)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # whether model.vocab_size was written in the config (file or override); when not, training takes the
    # tokenizer's. Not saved: config.yaml spells every field out, so a run's own config fixes it.
    vocab_size_given: bool = field(default=True, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "training": self.training.to_dict(), "run": self.run.to_dict()}

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FullConfig:
        unknown = sorted(set(data) - {"model", "training", "run"})
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; a run config has the sections "
                              "model, training and run")
        sections = {}
        for name in ("model", "training", "run"):
            value = {} if data.get(name) is None else data[name]
            if not isinstance(value, dict):
                raise ConfigError(f"the {name} section must be a mapping of field: value, got "
                                  f"{type(value).__name__} {value!r}")
            sections[name] = dict(value)
        model = StrideHybridConfig.canonical_names(sections["model"])
        preset = model.pop("preset", None)
        known = {f.name for f in fields(StrideHybridConfig)}
        unknown = sorted(set(model) - known)
        if unknown:
            error = unknown_fields_error("StrideHybridConfig", unknown, known, StrideHybridConfig.ALIASES)
            raise ConfigError(f"model section: {error}")
        model_config = (StrideHybridConfig.preset(preset, **model) if preset
                        else StrideHybridConfig.from_dict(model))
        return cls(model_config, TrainingConfig.from_dict(sections["training"]), RunConfig.from_dict(sections["run"]),
                   vocab_size_given="vocab_size" in model)


SECTION_FIELDS = {
    "model": {f.name for f in fields(StrideHybridConfig)} | {"preset"} | set(StrideHybridConfig.ALIASES),
    "training": {f.name for f in fields(TrainingConfig)},
    "run": {f.name for f in fields(RunConfig)},
}


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['--lr', '3e-4', '--model.d_model=128'] -> {'training': {'lr': 0.0003}, 'model': {...}}."""
    result: dict[str, dict[str, Any]] = {}
    given: dict[tuple[str, str], str] = {}  # (section, canonical field) -> the option that set it
    index = 0
    while index < len(items):
        item = items[index]
        if not item.startswith("--") or len(item) < 3:
            raise ConfigError(f"expected an override like --key value, got {item!r}")
        key, has_value, value = item[2:].partition("=")
        if not has_value:
            if index + 1 >= len(items):
                raise ConfigError(f"override --{key} has no value; write --{key} VALUE")
            value = items[index + 1]
            index += 1
        index += 1
        key = key.replace("-", "_")
        section, _, name = key.rpartition(".")
        if section:
            if section not in SECTION_FIELDS or name not in SECTION_FIELDS[section]:
                raise ConfigError(f"unknown setting --{key}; sections are model, training, run "
                                  f"(e.g. --training.lr 3e-4)")
        else:
            owners = [s for s, names in SECTION_FIELDS.items() if name in names]
            if not owners:
                raise ConfigError(f"unknown setting --{key}; see `smt train --help` for the fields")
            if len(owners) > 1:
                raise ConfigError(f"--{key} is ambiguous ({owners}); write e.g. --{owners[0]}.{key}")
            section = owners[0]
        if section == "model":
            name = StrideHybridConfig.ALIASES.get(name, name)  # old names land on the canonical field
        if (section, name) in given:  # the file rule: one value per field, old and new names included
            raise ConfigError(f"--{key} and --{given[section, name]} set the same field {section}.{name}; "
                              "keep one")
        given[section, name] = key
        try:
            parsed = parse_yaml(value)
        except ConfigError as error:
            raise ConfigError(f"--{key}: {error}") from error
        except yaml.YAMLError:  # not YAML (e.g. '{'): the text itself, for the field's own check to judge
            parsed = value
        result.setdefault(section, {})[name] = parsed
    return result


def load_run_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> FullConfig:
    """The run config from a file (or defaults) with overrides applied, validated."""
    data = _load_mapping(path) if path is not None else {}
    extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    for section in ("model", "training", "run"):
        if not isinstance({} if data.get(section) is None else data[section], dict):
            where = f"{path}: " if path is not None else ""
            raise ConfigError(f"{where}the {section} section must be a mapping of field: value, got "
                              f"{type(data[section]).__name__} {data[section]!r}")
    merged = {section: dict(data.get(section) or {}) for section in ("model", "training", "run")}
    if isinstance(data.get("model"), dict):
        merged["model"] = StrideHybridConfig.canonical_names(merged["model"])
    merged.update({k: v for k, v in data.items() if k not in merged})
    for section, values in extra.items():
        if section == "model" and isinstance(values, dict):
            values = StrideHybridConfig.canonical_names(values)
        merged.setdefault(section, {}).update(values)
    try:
        return FullConfig.from_dict(merged)
    except ConfigError as error:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{error}") from error
