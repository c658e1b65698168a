"""SMTForCausalLM: the native SMT model (or a baseline) as a transformers PreTrainedModel.

The wrapper builds the native model with `smt.models.build_model(config.to_smt_config())` and
registers the native model's children (wte, transformer, pooling, ssm, ..., lm_head) as its own,
so its state dict has exactly the native names: the model directory that `save_model_dir` writes
loads through `AutoModelForCausalLM.from_pretrained` and through `StrideHybridModel.from_pretrained`
alike, and the two give the same logits. The native forward runs on those shared modules.

Generation: `SMTCache` is the transformers `Cache` of the native `StreamState` (aux["state"]).
The first forward of `generate` runs the prompt and returns the cache; every later step feeds only
the newest token with the carried state (transformers' decode step slices input_ids to one
token whenever a cache is present), so each new token costs the same whatever the length. The
cache has a length (the tokens it has seen), so `generate(full_ids, cache=returned_cache)`
continues a stream: transformers feeds only the tokens beyond what the cache has seen.

attention_mask: a mask of all ones (or None) is accepted. A mask with zeros (a padded batch) is
refused with a ValueError: a stream state has no padding positions, and the memory's write
schedule (a write every `stride` tokens) is the same for every row of a batch. Generate prompts
of different lengths one at a time, or batch prompts of equal length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.generation import utils as generation_utils
from transformers.utils import ModelOutput

from smt.hf.configuration import SMTConfig
from smt.model_directory import run_directory_hint, verify_model_files
from smt.models.baselines import build_model
from smt.models.components.stream_state import StreamState

if "cache" not in getattr(generation_utils, "ALL_CACHE_NAMES", ()):
    import transformers

    raise ImportError(f"smt.hf needs a transformers whose generate passes the cache as `cache` (5.24 or newer), "
                      f"found {transformers.__version__}; pip install -U transformers")

PADDING_REFUSED = (
    "attention_mask has zeros (a padded batch), which SMT models cannot honour: every row carries one "
    "stream state with no padding positions, and the memory writes every `stride` tokens on the same "
    "schedule for every row. Generate prompts of different lengths one at a time (batch size 1), or batch "
    "prompts of equal length (attention_mask all ones, or None)"
)


class SMTCache(Cache):
    """The native stream state (`StreamState`, aux["state"]) as a transformers Cache.

    It has no per-layer cache objects: `state` is the whole of it, and its fixed size does not
    grow with the stream (the full-attention baseline's key/value cache being the exception,
    as natively). `get_seq_length()` is the number of tokens seen. Beam search reorders it
    (reorder_cache); it cannot be cropped (a recurrent memory cannot forget its last tokens),
    so assisted generation is refused (SMTForCausalLM._is_stateful).
    """

    def __init__(self, state: StreamState | None = None) -> None:
        super().__init__(layers=[])
        self.state = state

    def __repr__(self) -> str:
        seen = None if self.state is None else self.state.position.tolist()
        return f"SMTCache(tokens_seen={seen})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.state is None else int(self.state.position.max())

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return query_length + self.get_seq_length(), 0

    @property
    def is_linear(self) -> list[bool]:
        # not "linear only": the cache has a length, so generate slices a re-fed prompt by it
        return [False]

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    @property
    def batch_size(self) -> int:
        return -1 if self.state is None else self.state.batch_size

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise ValueError("an SMT stream state cannot be cropped: the memory cannot forget its last "
                             "tokens; keep the state from before them instead")

    def reset(self) -> None:
        self.state = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.state is not None:
            self.state = self.state.select(beam_idx.to(self.state.position.device))

    def batch_select_indices(self, indices: Tensor) -> None:
        self.reorder_cache(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.state is not None:
            state = self.state
            self.state = StreamState(state.position.repeat_interleave(repeats, 0),
                                     {k: v.repeat_interleave(repeats, 0) for k, v in state.buffers.items()})


@dataclass
class SMTCausalLMOutput(ModelOutput):
    """loss (when labels are given), logits (batch, tokens, vocab) and the cache to continue from."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    cache: SMTCache | None = None

    @property
    def past_key_values(self) -> SMTCache | None:
        """transformers' earlier name of `cache`."""
        return self.cache


# transformers' earlier names of `cache` (generate still maps them; forward takes them too)
CACHE_ALIASES = ("past_key_values", "cache_params")


def _cache_argument(cache: Any, kwargs: dict[str, Any]) -> tuple[Any, str]:
    """(the cache, the name it was passed under): `cache`, or one of CACHE_ALIASES popped from kwargs
    (None under an alias counts as not given); two of them given is an error."""
    given = [(name, kwargs.pop(name)) for name in CACHE_ALIASES if name in kwargs]
    given = [(name, value) for name, value in given if value is not None]
    if cache is not None:
        given.insert(0, ("cache", cache))
    if len(given) > 1:
        names = " and ".join(f"{name}=" for name, _ in given)
        raise ValueError(f"both {names} are given; they name the same thing (the stream state to continue): "
                         "pass one, `cache`")
    return given[0][1] if given else None, given[0][0] if given else "cache"


def check_attention_mask(attention_mask: Tensor | None) -> None:
    """None or all ones; anything else is refused (module docstring)."""
    if attention_mask is None:
        return
    if not isinstance(attention_mask, Tensor) or attention_mask.dim() != 2:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be a 2D (batch, tokens) tensor of ones or None, got {shape}")
    if not bool((attention_mask != 0).all()):
        raise ValueError(PADDING_REFUSED)


# GenerationConfig entries that are no generation defaults of the model: bookkeeping, and the output
# switches transformers copies from the model config
_NOT_GENERATION_DEFAULTS = ("transformers_version", "output_attentions", "output_hidden_states")


def generation_settings(config: Any) -> dict[str, Any]:
    """What generation_config.json keeps of a model's GenerationConfig: the values set on it (eos /
    bos / pad token ids, and any default such as max_new_tokens or do_sample), as transformers
    writes them, without its bookkeeping."""
    if config is None:
        return {}
    return {key: value for key, value in config.to_diff_dict().items()
            if not key.startswith("_") and key not in _NOT_GENERATION_DEFAULTS and value is not None}


# save_pretrained's options for push_to_hub=True (smt.model_directory.push_to_hub's), and transformers'
# saving options that cannot apply to an SMT model directory
PUSH_OPTIONS = ("repo_id", "token", "private", "commit_message", "create_pr", "revision")
REFUSED_SAVE_OPTIONS = ("variant", "save_function", "distributed_checkpoint")


class SMTPreTrainedModel(PreTrainedModel):
    """Common settings of the SMT transformers classes."""

    config_class = SMTConfig
    config: SMTConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _is_stateful = True  # the state cannot be rolled back: no assisted generation
    _no_split_modules: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        """The native models initialise every parameter when built (SMTForCausalLM marks them
        done, so transformers' initialisation leaves them alone). Parameters still not done are
        ones a checkpoint lacked while loading on the meta device: they get the native
        initialisation, copied from a freshly built model (built once, for all of them)."""
        pending = {name: p for name, p in self.named_parameters(remove_duplicate=False)
                   if not getattr(p, "_is_hf_initialized", False) and not p.is_meta}
        if not pending:
            return
        with torch.device("cpu"):
            fresh = dict(build_model(self.config.to_smt_config(device="cpu")).named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for name, param in pending.items():
                if name in fresh:
                    param.copy_(fresh[name].to(dtype=param.dtype, device=param.device))
                param._is_hf_initialized = True


class SMTForCausalLM(SMTPreTrainedModel, GenerationMixin):
    """An SMT model (any arch: smt, swa, gpt, mamba) for transformers: forward, generate, pipelines.

    `model.smt_model` is the native model (sharing every parameter): its `step`, `init_state`,
    `count_parameters` and native `generate` work as usual.
    """

    _tied_weights_keys = {"lm_head.weight": "wte.weight"}  # only when config.tie_embeddings

    def __init__(self, config: SMTConfig) -> None:
        super().__init__(config)
        native = build_model(config.to_smt_config())
        object.__setattr__(self, "_smt", native)  # not a submodule: its children are registered below
        for name, child in native.named_children():
            self.add_module(name, child)
        if not any(p.is_meta for p in native.parameters()):
            for param in native.parameters():  # initialised natively: transformers' init leaves them alone
                param._is_hf_initialized = True
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """transformers' from_pretrained, after a local directory is checked against its integrity
        record (checksums.json or a step's training.json), as every native loader does. A training
        run directory is refused naming `smt export` (AutoModelForCausalLM stops earlier, in
        AutoConfig, on the run directory's missing config.json)."""
        if pretrained_model_name_or_path is not None and Path(pretrained_model_name_or_path).is_dir():
            directory = Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or "")
            hint = None if (directory / "config.json").is_file() else run_directory_hint(directory)
            if hint is not None:
                raise FileNotFoundError(hint)
            verify_model_files(directory)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @property
    def smt_model(self) -> nn.Module:
        """The native model (StrideHybridModel, FullAttentionLM or MambaLM) on the same parameters."""
        return self._smt

    def train(self, mode: bool = True) -> SMTForCausalLM:
        super().train(mode)
        self._smt.training = mode  # the native forward reads its own flag (dropout)
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.wte

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def resize_token_embeddings(self, *args: Any, **kwargs: Any):
        raise ValueError("resize_token_embeddings is not supported for SMT models: build a model with the "
                         "new vocab_size (StrideHybridConfig(vocab_size=...)) and load the weights that fit")

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate gets its cache from the first forward: an SMTCache

    def prepare_inputs_for_generation(self, input_ids: Tensor, next_sequence_length: int | None = None,
                                      cache: Cache | None = None, **kwargs: Any) -> dict[str, Any]:
        if next_sequence_length is not None and next_sequence_length <= 0:
            raise ValueError(f"the cache has seen {cache.get_seq_length() if cache is not None else 0} tokens and "
                             f"input_ids holds {input_ids.shape[1]}: with cache=, pass the whole sequence (the tokens "
                             "the cache has seen, then the new ones)")
        return super().prepare_inputs_for_generation(input_ids, next_sequence_length=next_sequence_length,
                                                     cache=cache, **kwargs)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                cache: SMTCache | None = None, labels: Tensor | None = None, use_cache: bool | None = None,
                return_dict: bool | None = None, inputs_embeds: Tensor | None = None,
                **kwargs: Any) -> SMTCausalLMOutput | tuple:
        """logits (batch, tokens, vocab) of input_ids continuing `cache` (a fresh stream when None;
        transformers' earlier name `past_key_values` is taken too);
        with use_cache (the default) the cache comes back holding the state after these tokens
        (updated in place when one was given). labels give the shifted next-token loss
        (-100 ignored; summed and divided by `num_items_in_batch` when transformers' Trainer passes
        it, else the mean). attention_mask: None or all ones (module docstring)."""
        if inputs_embeds is not None:
            raise ValueError("SMT models take input_ids, not inputs_embeds (the memory pools token embeddings)")
        if input_ids is None:
            raise ValueError("input_ids is required")
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        cache, cache_name = _cache_argument(cache, kwargs)
        unsupported = sorted(k for k, v in kwargs.items() if v is not None and v is not False)
        if unsupported:
            raise ValueError(f"SMTForCausalLM.forward does not support {unsupported}: SMT models take input_ids "
                             "(with a cache to continue a stream) and count positions themselves")
        check_attention_mask(attention_mask)
        if cache is not None and not isinstance(cache, SMTCache):
            raise TypeError(f"{cache_name} must be an SMTCache (the `cache` of a previous call's output), got "
                            f"{type(cache).__name__}; SMT models carry their own stream state, not a key/value cache")
        logits, aux = self._smt(input_ids, state=None if cache is None else cache.state)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                                   reduction="mean" if num_items_in_batch is None else "sum")
            if num_items_in_batch is not None:
                loss = loss / num_items_in_batch
            if "auxiliary_loss" in aux:  # write_gate_sparsity: a per-token mean, weighted by this batch's share
                share = 1.0 if num_items_in_batch is None else (labels[:, 1:] != -100).sum() / num_items_in_batch
                loss = loss + aux["auxiliary_loss"] * share
        if use_cache is None or use_cache:
            cache = cache if cache is not None else SMTCache()
            cache.state = aux["state"]
        else:
            cache = None
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return tuple(v for v in (loss, logits, cache) if v is not None)
        return SMTCausalLMOutput(loss=loss, logits=logits, cache=cache)

    def save_pretrained(self, save_directory: str | Path, tokenizer: Any = None, safe_serialization: bool = True,
                        evaluation: dict[str, Any] | None = None, is_main_process: bool = True,
                        push_to_hub: bool = False, max_shard_size: int | str | None = None,
                        state_dict: dict[str, Tensor] | None = None, **kwargs: Any) -> None:
        """The SMT model directory (smt.model_directory.save_model_dir) of the model's current
        parameters (or of `state_dict`, as transformers' Trainer passes it): config.json with
        auto_map, the weights under the native names (sharded with an index when larger than
        `max_shard_size`, bytes or "5GB"), the tokenizer when given, generation_config.json (the
        model's generation_config), the Hub files and checksums.json; it loads through
        AutoModelForCausalLM and through the native from_pretrained alike. push_to_hub=True uploads
        the directory (repo_id=, token=, private=, commit_message=, create_pr=, revision=).
        transformers options that do not apply are refused, never ignored: variant, save_function,
        distributed_checkpoint (save_peft_format / save_original_format have nothing to convert)."""
        from smt.model_directory import push_to_hub as upload
        from smt.model_directory import save_model_dir

        hub = {name: kwargs.pop(name) for name in PUSH_OPTIONS if name in kwargs}
        for name in ("save_peft_format", "save_original_format"):  # no adapters, no converted layout: nothing to do
            kwargs.pop(name, None)
        refused = sorted(name for name in REFUSED_SAVE_OPTIONS if kwargs.pop(name, None) not in (None, False))
        if refused:
            raise ValueError(f"SMTForCausalLM.save_pretrained does not support {refused}: an SMT model directory "
                             "holds one set of weights, saved by smt.model_directory.save_model_dir")
        if kwargs:
            raise TypeError(f"SMTForCausalLM.save_pretrained got unexpected arguments {sorted(kwargs)}")
        if not is_main_process:
            return
        save_model_dir(self._smt, save_directory, tokenizer, safe_serialization, evaluation=evaluation,
                       generation=generation_settings(self.generation_config), max_shard_size=max_shard_size,
                       state_dict=state_dict)
        if push_to_hub:
            upload(hub.pop("repo_id", None) or Path(save_directory).name, save_directory, **hub)
