"""Configuration dataclasses: the model (`StrideHybridConfig`) and training (`TrainingConfig`).

Every field is validated in one place (`validate()`, called from `__post_init__`), so an
impossible configuration fails when it is built, with a message naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml

from smt.typed_fields import ConfigError, check_fields

Architecture = Literal["smt", "gpt", "swa", "mamba"]
SsmType = Literal["mamba", "simple"]
SsmInit = Literal["mamba", "mimetic"]
MemoryKind = Literal["gated_tokens", "slot_feedback", "token_rate"]
MemoryRead = Literal["slots", "slots+state"]
PositionType = Literal["rope", "learned"]
AttentionImpl = Literal["chunked", "dense"]
Dtype = Literal["float32", "bfloat16", "float16"]
Batching = Literal["random", "stream"]
NonfinitePolicy = Literal["stop", "skip"]
ARCHITECTURES = get_args(Architecture)
SSM_TYPES = get_args(SsmType)
SSM_INITS = get_args(SsmInit)
MEMORIES = get_args(MemoryKind)
MEMORY_READS = get_args(MemoryRead)
# memory variants the ablation (docs/MEMORY.md) showed failed, removed: the field and the one value an
# old config may hold for it (the value that meant "off"); any other value is a ConfigError
REMOVED_FIELDS = {"write_vectors": 1, "write_gate_gradient": "clamp"}
POSITION_TYPES = get_args(PositionType)
ATTENTION_IMPLS = get_args(AttentionImpl)
DEVICES = ("cpu", "cuda", "mps", "auto")
DTYPES = get_args(Dtype)


def is_device_name(name: object) -> bool:
    return isinstance(name, str) and (name in DEVICES or re.fullmatch(r"cuda:\d+", name) is not None)


DEVICE_FIX = "use cpu, cuda, cuda:N, mps or auto (a GPU is cuda)"
# The fields a baseline's model never reads (arch -> names): the memory's (pooling, writes, gates,
# read) and, for the transformer baselines, the SSM's. A baseline's config leaves them out when it is
# written (`to_dict`: config.json, config.yaml, the model card), an older file that holds them loads as
# before, and two configs are equal when they write the same fields. m_input_tokens and the
# transformer's fields stay with every arch: the evaluation's window-relative splits read them.
MEMORY_FIELDS = ("n_ssm_outputs", "stride", "memory", "pooling_heads", "pool_position_bias", "write_gate",
                 "write_gate_sparsity", "memory_read")
SSM_FIELDS = ("ssm_type", "ssm_n_layers", "ssm_d_state", "ssm_d_conv", "ssm_expand", "ssm_dt_rank", "ssm_dt_min",
              "ssm_dt_max", "ssm_init", "rms_norm_eps", "use_cuda_kernels")
UNUSED_FIELDS: dict[str, tuple[str, ...]] = {
    "smt": (),
    "swa": MEMORY_FIELDS + SSM_FIELDS + ("context_length",),
    "gpt": MEMORY_FIELDS + SSM_FIELDS,
    "mamba": MEMORY_FIELDS + ("context_length",),
}
MAX_CONFIG_BYTES = 1_000_000  # a config is a few kB; a bound keeps a runaway file from hanging the parser
DEFAULT_WRITE_GATE_SPARSITY = 1e-4  # the hard write gates' penalty when write_gate_sparsity is None


def _resolved_sparsity(write_gate: bool) -> float:
    """What `write_gate_sparsity: None` means: the default penalty with hard gates on, none without."""
    return DEFAULT_WRITE_GATE_SPARSITY if write_gate is True else 0.0


def pad_vocab_size(vocab_size: int, multiple: int = 8) -> int:
    """Round a tokenizer's vocabulary up to a multiple of `multiple` (as Mamba does)."""
    return int(math.ceil(vocab_size / multiple) * multiple)


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads `3e-4` as a string; this loader reads it as a float, like YAML 1.2. It also
    refuses duplicate keys (YAML keeps the last silently) and aliases (`*name`: an alias bomb of a
    few lines expands to gigabytes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML alias *{event.anchor} is not accepted in a "
                              "config; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # an unhashable key: SafeLoader's own error
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"line {line}: duplicate key {key!r} (first at line {seen[key]}); YAML would "
                                  "keep only the last, merge them into one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """Safe YAML parsing (no object construction) that reads 3e-4 as a float; duplicate keys,
    aliases, more than MAX_CONFIG_BYTES and deep nesting are a ConfigError."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{len(text)} characters of YAML, more than a config's {MAX_CONFIG_BYTES}; "
                          "is this the right file?")
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError as error:
        raise ConfigError("YAML nested too deeply for a config; flatten it") from error


def _json_mapping(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook that refuses duplicate keys (json.loads keeps the last silently)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ConfigError(f"duplicate key {key!r}; JSON would keep only the last, merge them into one")
        result[key] = value
    return result


def parse_json(text: str) -> Any:
    """json.loads with duplicate keys refused."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{len(text)} characters of JSON, more than a config's {MAX_CONFIG_BYTES}; "
                          "is this the right file?")
    try:
        return json.loads(text, object_pairs_hook=_json_mapping)
    except RecursionError as error:
        raise ConfigError("JSON nested too deeply for a config; flatten it") from error


def load_mapping(path: str | Path, expected: str = "a mapping of field names to values") -> dict[str, Any]:
    """Read a JSON or YAML file that must hold a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save the file as "
                          "UTF-8") from error
    try:
        data = parse_json(text) if path.suffix == ".json" else parse_yaml(text)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    except (ValueError, yaml.YAMLError) as error:
        message = " ".join(str(error).split())  # YAML's messages span lines; an error is one line
        raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {message}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


def unknown_fields_error(kind: str, unknown: list[str], known: set[str],
                         aliases: dict[str, str] | None = None) -> ConfigError:
    """The error for fields a config does not have, with the closest valid names (a name close to
    an old alias suggests the canonical field)."""
    aliases = aliases or {}
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), sorted(known | set(aliases)), n=1, cutoff=0.6)
        if close:
            hints.append(f"{name!r} -> {aliases.get(close[0], close[0])!r}?")
    hint = f" (did you mean: {', '.join(hints)})" if hints else ""
    return ConfigError(f"unknown {kind} field(s) {unknown}{hint}; valid fields are {sorted(known)}")


def check_numbers(config: Any, names: tuple[str, ...], fail: Callable[[str, str, str], None]) -> None:
    """Fields that must be numbers (None allowed when the default is None): a clear error for 'fast'."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            fail(name, f"must be a number, got {type(value).__name__}", "write a number such as 3e-4")


class _Serialisable:
    """to/from dict, JSON and YAML for a dataclass config; unknown keys are an error. Old field
    names in ALIASES (old -> canonical) are accepted wherever fields are given."""

    ALIASES: ClassVar[dict[str, str]] = {}

    @classmethod
    def canonical_names(cls, data: dict[str, Any]) -> dict[str, Any]:
        """`data` with old field names replaced by their canonical ones (both given: an error)."""
        data = dict(data)
        for old, new in cls.ALIASES.items():
            if old in data:
                if new in data:
                    raise ConfigError(f"{cls.__name__}: both {old!r} and {new!r} are given; {old!r} is the old "
                                      f"name of {new!r}, keep only {new!r}")
                data[new] = data.pop(old)
        return data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = cls.canonical_names(data)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise unknown_fields_error(cls.__name__, unknown, known, cls.ALIASES)
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_file(cls, path: str | Path):
        """Load from a .json or .yaml/.yml file."""
        return cls.from_dict(load_mapping(path))

    def replace(self, **changes: Any):
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **self.canonical_names(changes))  # type: ignore[type-var]


def _accept_aliases(cls):
    """Let the dataclass constructor take the old field names too (and `...`, the seed quick start's
    placeholder, for all defaults), and read the old names as properties."""
    init = cls.__init__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args == (Ellipsis,):  # `StrideHybridConfig(...)`, the seed's placeholder: the defaults
            args = ()
        init(self, *args, **cls.canonical_names(kwargs))

    __init__.__doc__, __init__.__signature__ = init.__doc__, inspect.signature(init)
    cls.__init__ = __init__
    for old, new in cls.ALIASES.items():
        setattr(cls, old, property(lambda self, new=new: getattr(self, new),
                                   doc=f"Old name of `{new}` (still accepted)."))
    return cls


@_accept_aliases
@dataclass
class StrideHybridConfig(_Serialisable):
    """Shape and behaviour of a Stride Memory Transformer (docs/architecture.md, "The semantics and the invariants").

    The transformer reads a window of the `n_ssm_outputs` (N) newest memory slots and the
    `m_input_tokens` (M) newest tokens; every `stride` (S) tokens the window is pooled into
    one vector and written to the SSM memory.
    """

    ALIASES: ClassVar[dict[str, str]] = {"n_layers": "transformer_n_layers", "ssm_layers": "ssm_n_layers"}

    # window and memory
    n_ssm_outputs: int = 15
    m_input_tokens: int = 50
    stride: int = 16
    # vocabulary and width
    vocab_size: int = 50280
    d_model: int = 768
    # transformer (GPT-2 small shape)
    transformer_n_layers: int = 12
    n_heads: int | None = None  # default: GPT-2's 64-wide heads (12 at d_model=768, 8 at 512)
    d_ff: int | None = None  # default 4 * d_model
    position: PositionType = "rope"  # "rope" (unbounded streams) or "learned" (GPT-2 parity)
    max_position_embeddings: int = 1024  # only used by position="learned"
    rope_base: float = 10000.0
    attention_impl: AttentionImpl = "chunked"  # "chunked" (linear cost) or "dense" (test oracle)
    attention_block_size: int | None = None  # query block of the chunked path; default max(M, 64)
    layer_norm_eps: float = 1e-5
    # the memory strategy (smt.models.memory): "gated_tokens" (the default; docs/MEMORY.md, "Why this default"),
    # pooling reads the window's tokens only and the SSM runs as one scan; "slot_feedback", the seed's
    # design, pooling over the memory slots + tokens (a sequential chain); "token_rate", every token
    # enters the SSM (no pooling) and reads its output, every S tokens one becomes a slot (docs/TEXT.md).
    # Older configs name the first two with `pool_over_memory` (false / true), still accepted.
    memory: MemoryKind = "gated_tokens"
    # attention pooling
    pooling_heads: int = 1
    pool_position_bias: bool = False  # a learned pooling score per window position (the newest tokens)
    # a learned gate per write (sigmoid of the pooled vector): the memory keeps g of the state the
    # write produces and 1 - g of the state before, so a write of filler can be skipped (docs/MEMORY.md)
    write_gate: bool = True
    # the gate is hard (a stretched sigmoid clipped to [0, 1], so a write can be skipped exactly) and
    # this weight (> 0 with write_gate) times the mean gate is added to the training loss: the memory
    # pays for every write it keeps, and a state that skips every filler write is the same at any length
    # None: 1e-4 with write_gate (tuned on code's training modules; docs/MEMORY.md, "Why this default"), else 0
    write_gate_sparsity: float | None = None
    # "slots": the transformer reads the memory through its N slots only (the seed's design);
    # "slots+state": each token also reads the memory's last SSM state with its own query (issue 13)
    memory_read: MemoryRead = "slots"
    # SSM memory (Mamba-130M shape)
    ssm_type: SsmType = "mamba"
    ssm_n_layers: int = 24
    ssm_d_state: int = 16
    ssm_d_conv: int = 4
    ssm_expand: int = 2
    ssm_dt_rank: int | None = None  # default ceil(d_model / 16)
    # Mamba's initial step sizes dt, log-uniform in [ssm_dt_min, ssm_dt_max]; retention per step is
    # exp(-dt * A), A in 1..d_state. None: [1e-4, 1e-2] for SMT's memory (it must keep a fact over
    # hundreds of writes; docs/MEMORY.md), Mamba's own [1e-3, 1e-1] for the Mamba-only LM (arch mamba)
    ssm_dt_min: float | None = None
    ssm_dt_max: float | None = None
    ssm_init: SsmInit = "mamba"  # "mamba" (the paper's) or "mimetic" (A near 0, C projection = B's)
    rms_norm_eps: float = 1e-5
    use_cuda_kernels: bool = True  # mamba-ssm kernels, only when importable and on CUDA
    # architecture: smt, or one of the baselines sharing the same blocks
    arch: Architecture = "smt"
    context_length: int | None = None  # arch gpt: keys a token sees at most (its trained context);
    # streams longer than it slide the KV cache (None: the cache keeps every key)
    # misc
    tie_embeddings: bool = True
    dropout: float = 0.0
    initializer_range: float = 0.02
    device: str = "cpu"
    dtype: Dtype = "float32"

    def __post_init__(self) -> None:
        check_fields(self, "model")
        if self.n_heads is None and isinstance(self.d_model, int) and not isinstance(self.d_model, bool):
            heads = max(1, self.d_model // 64)
            while self.d_model % heads:
                heads -= 1
            self.n_heads = heads
        if self.write_gate_sparsity is None:
            self.write_gate_sparsity = _resolved_sparsity(self.write_gate)
        self.validate()

    @classmethod
    def canonical_names(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Old names replaced, and the old `pool_over_memory` mapped to the strategy it chose (`memory`)."""
        data = super().canonical_names(data)
        for name, neutral in REMOVED_FIELDS.items():
            if name in data and data.pop(name) != neutral:
                raise ConfigError(f"{name} was removed (a memory variant that failed in docs/MEMORY.md's ablation); "
                                  f"delete {name} from the config")
        if data.get("memory_read") == "slots+tied":
            raise ConfigError("memory_read='slots+tied' was removed (a memory read that failed in docs/MEMORY.md's "
                              "ablation); use memory_read: slots+state or slots")
        if "pool_over_memory" in data:
            legacy = data.pop("pool_over_memory")
            if not isinstance(legacy, bool):
                raise ConfigError(f"pool_over_memory={legacy!r}: must be true or false; or name the strategy with "
                                  f"memory: one of {list(MEMORIES)}")
            mapped = "slot_feedback" if legacy else "gated_tokens"
            if data.setdefault("memory", mapped) != mapped:
                raise ConfigError(f"pool_over_memory={legacy} means memory={mapped!r}, but memory="
                                  f"{data['memory']!r} is given; keep only memory")
        return data

    def to_dict(self) -> dict[str, Any]:
        """Every field that applies to the config's arch: a baseline leaves out those its model never reads
        (`UNUSED_FIELDS`)."""
        data = super().to_dict()
        for name in UNUSED_FIELDS.get(self.arch, ()):
            data.pop(name, None)
        return data

    def __eq__(self, other: object) -> bool:
        """The same fields written (`to_dict`): two baselines that differ only in fields their model never
        reads are the same model."""
        if not isinstance(other, StrideHybridConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    @property
    def pool_over_memory(self) -> bool:
        """Whether pooling reads the memory slots too (the old name of memory == 'slot_feedback')."""
        return self.memory == "slot_feedback"

    def replace(self, **changes: Any) -> StrideHybridConfig:
        """A validated copy with some fields changed; a write-gate penalty left at its default follows
        the gate (`replace(write_gate=False)` of the default drops the penalty with the gates)."""
        changes = self.canonical_names(changes)
        if ("write_gate" in changes and "write_gate_sparsity" not in changes
                and self.write_gate_sparsity == _resolved_sparsity(self.write_gate)):
            changes["write_gate_sparsity"] = None
        return super().replace(**changes)

    # ------------------------------------------------------------------ derived
    @property
    def window_size(self) -> int:
        return self.n_ssm_outputs + self.m_input_tokens

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def dt_rank(self) -> int:
        return self.ssm_dt_rank if self.ssm_dt_rank is not None else math.ceil(self.d_model / 16)

    @property
    def dt_init_range(self) -> tuple[float, float]:
        """(dt_min, dt_max) of the Mamba initialisation, the defaults filled in (see the fields)."""
        low, high = (1e-3, 1e-1) if self.arch == "mamba" else (1e-4, 1e-2)
        return (float(self.ssm_dt_min) if self.ssm_dt_min is not None else low,
                float(self.ssm_dt_max) if self.ssm_dt_max is not None else high)

    @property
    def d_inner(self) -> int:
        return self.ssm_expand * self.d_model

    @property
    def block_size(self) -> int:
        return self.attention_block_size or max(self.m_input_tokens, 64)

    @property
    def window_reach(self) -> int:
        """R = transformer_n_layers x (m_input_tokens - 1): the farthest back a token can see through the
        transformer's windows alone; beyond it only the memory can carry information."""
        return self.transformer_n_layers * (self.m_input_tokens - 1)

    @property
    def has_memory(self) -> bool:
        return self.arch == "smt" and self.n_ssm_outputs > 0

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:  # named as the typed checks name it: section.field
            raise ConfigError(f"model.{name}={getattr(self, name)!r}: {problem}; {fix}")

        for name in ("n_ssm_outputs", "m_input_tokens", "stride", "vocab_size", "d_model",
                     "transformer_n_layers", "n_heads", "pooling_heads", "ssm_n_layers",
                     "ssm_d_state", "ssm_d_conv", "ssm_expand", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                fail(name, f"must be an integer, got {type(value).__name__}", "pass an int")
        for f in fields(self):
            if isinstance(f.default, bool) and not isinstance(getattr(self, f.name), bool):
                fail(f.name, f"must be true or false, got {type(getattr(self, f.name)).__name__}",
                     "pass a boolean (in YAML: true / false)")
        for name in ("d_ff", "ssm_dt_rank", "attention_block_size", "context_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                fail(name, "must be a positive integer or None", "use None for the default")
        if self.n_ssm_outputs < 0:
            fail("n_ssm_outputs", "cannot be negative", "use 0 for a window without memory")
        if self.m_input_tokens < 1:
            fail("m_input_tokens", "the window must hold at least one token (the current one)",
                 "use m_input_tokens >= 1")
        if self.stride < 1:
            fail("stride", "must be >= 1 (a write every `stride` tokens)", "use stride >= 1")
        if self.vocab_size < 2:
            fail("vocab_size", "a vocabulary needs at least 2 tokens", "set it from the tokenizer")
        for name in ("d_model", "transformer_n_layers", "n_heads", "pooling_heads", "ssm_d_state",
                     "ssm_d_conv", "ssm_expand", "max_position_embeddings"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1", "use a positive size")
        if self.ssm_n_layers < 1 and (self.has_memory or self.arch == "mamba"):
            fail("ssm_n_layers", "the memory needs at least one SSM layer" if self.has_memory else
                 "arch 'mamba' is its SSM stack", "use ssm_n_layers >= 1")
        if self.ssm_n_layers < 0:
            fail("ssm_n_layers", "cannot be negative", "use ssm_n_layers >= 0")
        if self.d_model % self.n_heads:
            fail("n_heads", f"d_model={self.d_model} is not divisible by n_heads",
                 "choose n_heads dividing d_model")
        if self.d_head % 2 and self.position == "rope":
            fail("n_heads", f"RoPE needs an even head size, d_model/n_heads={self.d_head}",
                 "choose n_heads so that d_model/n_heads is even")
        if self.d_model % self.pooling_heads:
            fail("pooling_heads", f"d_model={self.d_model} is not divisible by pooling_heads",
                 "choose pooling_heads dividing d_model")
        if not (isinstance(self.write_gate_sparsity, (int, float)) and self.write_gate_sparsity >= 0):
            fail("write_gate_sparsity", f"must be a number >= 0, got {self.write_gate_sparsity!r}",
                 "use 0 (no penalty) or a small weight such as 0.05")
        if self.write_gate_sparsity > 0 and not self.write_gate:
            fail("write_gate_sparsity", "penalises the write gates, but write_gate is false",
                 "set write_gate: true, or write_gate_sparsity: 0")
        choices = {"arch": ARCHITECTURES, "memory": MEMORIES, "ssm_type": SSM_TYPES, "ssm_init": SSM_INITS,
                   "position": POSITION_TYPES, "memory_read": MEMORY_READS,
                   "attention_impl": ATTENTION_IMPLS, "dtype": DTYPES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, "unknown value", f"use one of {list(allowed)}")
        if self.write_gate and not self.write_gate_sparsity > 0:
            fail("write_gate_sparsity", "write_gate with write_gate_sparsity 0 was the soft gate, removed (it "
                 "failed in docs/MEMORY.md's ablation)", "use write_gate_sparsity > 0 (None: the default 1e-4), "
                 "or write_gate: false")
        if not is_device_name(self.device):
            fail("device", "unknown device", DEVICE_FIX)
        if self.memory == "token_rate":
            if self.memory_read != "slots":
                fail("memory_read", "memory='token_rate' reads every token by construction",
                     "leave memory_read at 'slots' with token_rate")
            if self.pool_position_bias:
                fail("pool_position_bias", "memory='token_rate' does not pool", "set pool_position_bias: false")
            if self.write_gate and self.ssm_type != "mamba":
                fail("write_gate", "memory='token_rate' gates the tokens through a Mamba memory's gated scan",
                     "use ssm_type='mamba', or write_gate: false")
        if self.memory_read != "slots" and self.ssm_type != "mamba":
            fail("memory_read", "reads the (d_inner x d_state) state of a Mamba memory",
                 "use ssm_type='mamba' or memory_read='slots'")
        check_numbers(self, ("dropout", "initializer_range", "rope_base"), fail)
        if not 0.0 <= float(self.dropout) < 1.0:
            fail("dropout", "must be in [0, 1)", "use e.g. 0.0 or 0.1")
        if not float(self.initializer_range) > 0:
            fail("initializer_range", "must be > 0", "use e.g. 0.02")
        for name in ("ssm_dt_min", "ssm_dt_max"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                fail(name, "must be a number or None", "use e.g. 0.001, or None for the default")
        dt_min, dt_max = self.dt_init_range
        if not 0 < dt_min <= dt_max:
            fail("ssm_dt_min", f"needs 0 < ssm_dt_min <= ssm_dt_max (resolved: {dt_min} and {dt_max})",
                 "use e.g. ssm_dt_min=0.0001, ssm_dt_max=0.01 (None takes the default)")
        if not float(self.rope_base) > 1:
            fail("rope_base", "must be > 1", "use e.g. 10000")
        for name in ("layer_norm_eps", "rms_norm_eps"):  # <= 0 divides by zero (or a negative) on a flat input
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                fail(name, "must be a small positive number", "use e.g. 1e-5")

    # ------------------------------------------------------------------ presets
    @classmethod
    def wikitext103(cls, **overrides: Any) -> StrideHybridConfig:
        """The original setup: GPT-2-small transformer + Mamba-130M-shaped memory, N=15 M=50 S=16."""
        return cls(**{**dict(n_ssm_outputs=15, m_input_tokens=50, stride=16), **overrides})

    @classmethod
    def pg19(cls, **overrides: Any) -> StrideHybridConfig:
        """Long-context books: a wider window, N=20 M=80 S=25."""
        return cls(**{**dict(n_ssm_outputs=20, m_input_tokens=80, stride=25), **overrides})

    @classmethod
    def small(cls, **overrides: Any) -> StrideHybridConfig:
        """Fast experiments: N=10 M=30 S=10, 6 transformer layers, 12 SSM layers, d=512."""
        base = dict(n_ssm_outputs=10, m_input_tokens=30, stride=10, d_model=512, transformer_n_layers=6,
                    n_heads=8, ssm_n_layers=12)
        return cls(**{**base, **cls.canonical_names(overrides)})

    @classmethod
    def tiny(cls, **overrides: Any) -> StrideHybridConfig:
        """Tests and CPU demos: a few hundred thousand parameters."""
        base = dict(n_ssm_outputs=4, m_input_tokens=8, stride=4, vocab_size=256, d_model=64,
                    transformer_n_layers=2, n_heads=4, ssm_n_layers=2, ssm_d_state=8, pooling_heads=2)
        return cls(**{**base, **cls.canonical_names(overrides)})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> StrideHybridConfig:
        """A named preset: wikitext103, pg19, small or tiny."""
        makers = {"wikitext103": cls.wikitext103, "pg19": cls.pg19, "small": cls.small, "tiny": cls.tiny}
        if name not in makers:
            raise ConfigError(f"unknown preset {name!r}; use one of {sorted(makers)}")
        return makers[name](**overrides)

    # ------------------------------------------------------------------ summary
    @property
    def _hard_gate_note(self) -> str:
        if not self.write_gate_sparsity:
            return ""
        return f" (hard, sparsity {self.write_gate_sparsity:g})"

    def summary(self, print_fn=print) -> str:
        """A readable table of the configuration (the rows that apply to its arch); printed and returned."""
        ssm = (f"{self.ssm_type}, {self.ssm_n_layers} layers, d_state={self.ssm_d_state}, d_conv={self.ssm_d_conv}, "
               f"expand={self.ssm_expand}, dt_rank={self.dt_rank}, dt init {self.dt_init_range[0]:g}.."
               f"{self.dt_init_range[1]:g}, {self.ssm_init} init")
        transformer = [
            ("transformer", f"{self.transformer_n_layers} layers, d_model={self.d_model}, {self.n_heads} heads "
                            f"(d_head={self.d_head}), d_ff={self.ffn_dim}"),
            ("positions", self.position + (f" (table of {self.max_position_embeddings})"
                                           if self.position == "learned" else " (unbounded streams)")),
        ]
        if self.arch == "smt":
            rows = [
                ("architecture", self.arch),
                ("window", f"{self.n_ssm_outputs} memory slots + {self.m_input_tokens} tokens = "
                           f"{self.window_size} vectors"),
                ("memory write", f"every {self.stride} tokens (T tokens -> T // {self.stride} writes)"),
                *transformer,
                ("attention pooling", f"{self.pooling_heads} head(s), over "
                                      f"{'memory + tokens' if self.pool_over_memory else 'tokens only'}"
                                      f"{', position bias' if self.pool_position_bias else ''}"
                                      f"{', gated writes' if self.write_gate else ''}"
                                      f"{self._hard_gate_note}"),
                ("memory read", {"slots": "slots", "slots+state": "slots + per-token read of the SSM state"}
                 [self.memory_read]),
                ("SSM memory", ssm),
            ]
        elif self.arch == "swa":
            rows = [("architecture", f"{self.arch} (sliding-window transformer, no memory)"),
                    ("window", f"{self.m_input_tokens} tokens"), *transformer]
        elif self.arch == "gpt":
            context = "the whole stream" if self.context_length is None else f"the last {self.context_length} tokens"
            rows = [("architecture", f"{self.arch} (full-attention transformer)"),
                    ("attention", f"causal, over {context}"), *transformer]
        else:
            rows = [("architecture", f"{self.arch} (Mamba language model: the tokens through the SSM stack)"),
                    ("SSM", ssm)]
        rows += [
            ("vocabulary", f"{self.vocab_size} (lm_head {'tied to' if self.tie_embeddings else 'separate from'}"
                           " the embedding)"),
            ("device / dtype", f"{self.device} / {self.dtype}"),
            ("presets", "wikitext103 (15+50, S=16), pg19 (20+80, S=25), small (10+30, S=10), tiny"),
        ]
        width = max(len(k) for k, _ in rows)
        text = "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)
        if print_fn is not None:
            print_fn(text)
        return text


@dataclass
class TrainingConfig(_Serialisable):
    """Optimisation and run settings; see smt.training."""

    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    seq_len: int = 512
    lr: float = 6e-4
    min_lr_ratio: float = 0.1  # cosine decay floor = lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    max_steps: int | None = 1000
    epochs: float | None = None
    eval_interval: int = 200
    eval_batches: int = 20
    log_interval: int = 10
    checkpoint_interval: int = 500
    keep_last_checkpoints: int = 3
    seed: int = 1337
    # the order of the training data (documents, windows); None: `seed`. Set it to compare model
    # seeds on one data order (Hugging Face's TrainingArguments.data_seed means the same)
    data_seed: int | None = None
    dtype: Dtype = "float32"  # float32, bfloat16 (autocast) or float16 (autocast + loss scaling, GPUs without bf16)
    compile: bool = False
    batching: Batching = "random"  # "random" windows or "stream" (long documents, state carried)
    nonfinite: NonfinitePolicy = "stop"  # what to do on a NaN/inf loss or gradient: "stop" or "skip"
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_fields(self, "training")
        self.validate()

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise ConfigError(f"training.{name}={getattr(self, name)!r}: {problem}; {fix}")

        check_numbers(self, ("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "epochs",
                             "warmup_steps"), fail)
        for name in ("batch_size", "gradient_accumulation_steps", "seq_len", "eval_interval",
                     "eval_batches", "log_interval", "checkpoint_interval", "keep_last_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "must be a positive integer", "use a value >= 1")
        if self.data_seed is not None and self.data_seed < 0:  # check_fields has made it an int
            fail("data_seed", "must be a non-negative integer or null", "use e.g. 1, or null to follow seed")
        if self.warmup_steps < 0:
            fail("warmup_steps", "cannot be negative", "use 0 for no warmup")
        if not float(self.lr) > 0:
            fail("lr", "must be > 0", "use e.g. 6e-4")
        if not 0 <= float(self.min_lr_ratio) <= 1:
            fail("min_lr_ratio", "must be in [0, 1]", "use e.g. 0.1")
        if float(self.weight_decay) < 0:
            fail("weight_decay", "cannot be negative", "use e.g. 0.1")
        for name in ("beta1", "beta2"):
            if not 0 <= float(getattr(self, name)) < 1:
                fail(name, "must be in [0, 1)", "use e.g. 0.9 / 0.95")
        if float(self.grad_clip) < 0:
            fail("grad_clip", "cannot be negative", "use 0 to disable clipping")
        if self.max_steps is None and self.epochs is None:
            fail("max_steps", "set max_steps or epochs", "e.g. max_steps=1000")
        if self.max_steps is not None and self.max_steps < 1:
            fail("max_steps", "must be >= 1", "use a positive number of steps")
        if self.epochs is not None and not float(self.epochs) > 0:
            fail("epochs", "must be > 0", "use a positive number of epochs")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            fail("dtype", "unknown training dtype", "use float32, bfloat16 or float16")
        if self.batching not in ("random", "stream"):
            fail("batching", "unknown batching mode", "use random or stream")
        if self.nonfinite not in ("stop", "skip"):
            fail("nonfinite", "unknown policy", "use stop or skip")
        if not is_device_name(self.device):
            fail("device", "unknown training device", DEVICE_FIX)
