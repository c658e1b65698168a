"""Mamba-1 checkpoints -> our SSM stack.

Two layouts are read: the original mamba_ssm one (`backbone.embedding`, `backbone.layers.N.mixer.*`,
config keys d_model / n_layer) and the Hugging Face `MambaForCausalLM` one (`backbone.embeddings`,
config keys hidden_size / num_hidden_layers). Layer parameters have the same names as ours.
"""

from __future__ import annotations

from smt.config import StrideHybridConfig
from smt.pretrained.mapping import (
    MappedCheckpoint,
    Source,
    WeightMismatchError,
    layer_indices,
    same_values,
    strip_prefix,
)
from smt.pretrained.sources import Checkpoint

LAYER_PARAMS = ("norm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight", "mixer.conv1d.bias",
                "mixer.x_proj.weight", "mixer.dt_proj.weight", "mixer.dt_proj.bias", "mixer.A_log",
                "mixer.D", "mixer.out_proj.weight")
EMBEDDING_NAMES = ("embeddings.weight", "embedding.weight")


def _check_shapes(ckpt: Checkpoint, names: dict[str, str], config: StrideHybridConfig) -> None:
    tensors, where = ckpt.tensors, f"Mamba checkpoint {ckpt.name}"

    def fail(what: str, found: int, field: str, wanted: int) -> None:
        raise WeightMismatchError(f"{where} has {what} {found} but config.{field}={wanted}; "
                                  f"set {field}={found}")

    d = tensors[names["norm_f.weight"]].shape[0]
    if d != config.d_model:
        fail("d_model (hidden_size)", d, "d_model", config.d_model)
    layers = layer_indices(names, "layers.")
    if len(layers) != config.ssm_n_layers:
        fail("layer count", len(layers), "ssm_n_layers", config.ssm_n_layers)
    a_log = names.get("layers.0.mixer.A_log")
    if a_log is not None:
        d_inner, d_state = tensors[a_log].shape
        if d_state != config.ssm_d_state:
            fail("d_state (state_size)", d_state, "ssm_d_state", config.ssm_d_state)
        if d_inner != config.d_inner:
            fail("expand", d_inner // d, "ssm_expand", config.ssm_expand)
    conv = names.get("layers.0.mixer.conv1d.weight")
    if conv is not None and tensors[conv].shape[-1] != config.ssm_d_conv:
        fail("d_conv (conv_kernel)", tensors[conv].shape[-1], "ssm_d_conv", config.ssm_d_conv)
    dt = names.get("layers.0.mixer.dt_proj.weight")
    if dt is not None and tensors[dt].shape[1] != config.dt_rank:
        fail("dt_rank (time_step_rank)", tensors[dt].shape[1], "ssm_dt_rank", config.dt_rank)


def _notes(ckpt: Checkpoint, config: StrideHybridConfig) -> list[str]:
    cfg, notes = ckpt.config, []
    eps = cfg.get("layer_norm_epsilon", cfg.get("norm_epsilon"))
    if eps is not None and abs(eps - config.rms_norm_eps) > 1e-12:
        notes.append(f"Mamba layer_norm_epsilon={eps} differs from config.rms_norm_eps={config.rms_norm_eps}")
    if cfg.get("rms_norm") is False:
        raise WeightMismatchError(f"Mamba checkpoint {ckpt.name} uses LayerNorm (rms_norm=false); our "
                                  "SSM stack uses RMSNorm")
    act = cfg.get("hidden_act")
    if act is not None and act != "silu":
        notes.append(f"Mamba hidden_act={act!r}, but our mixer uses SiLU")
    return notes


def map_mamba(ckpt: Checkpoint, config: StrideHybridConfig) -> MappedCheckpoint:
    """Mamba tensors under our names (`ssm.layers.N...`); refuses when shapes do not fit `config`."""
    names = {strip_prefix(k, ("backbone.",)): k for k in ckpt.tensors}
    if "norm_f.weight" not in names or not layer_indices(names, "layers."):
        raise WeightMismatchError(f"{ckpt.name} does not look like a Mamba checkpoint (no norm_f.weight / "
                                  "layers.N.mixer.*); expected mamba_ssm or MambaForCausalLM tensor names")
    _check_shapes(ckpt, names, config)
    tensors = ckpt.tensors
    out = MappedCheckpoint("mamba", notes=_notes(ckpt, config))
    used = set()
    for i in range(config.ssm_n_layers):
        for param in LAYER_PARAMS:
            ours = f"layers.{i}.{param}"
            key = names.get(ours)
            if key is None and param == "mixer.conv1d.bias":
                out.zero_init[f"ssm.{ours}"] = ("the source has no conv1d bias (use_conv_bias=False); "
                                                "zero keeps its function")
                continue
            if key is None:
                raise WeightMismatchError(f"Mamba checkpoint {ckpt.name} lacks {ours}")
            used.add(key)
            out.tensors[f"ssm.{ours}"] = Source(tensors[key], f"mamba:{key}")
    used.add(names["norm_f.weight"])
    out.tensors["ssm.norm_f.weight"] = Source(tensors[names["norm_f.weight"]], f"mamba:{names['norm_f.weight']}")
    embedding_key = next((names[n] for n in EMBEDDING_NAMES if n in names), None)
    if embedding_key is not None:
        used.add(embedding_key)
        out.embedding = Source(tensors[embedding_key], f"mamba:{embedding_key}")
    if "lm_head.weight" in names:
        key = names["lm_head.weight"]
        used.add(key)
        if embedding_key is not None and same_values(tensors[key], tensors[embedding_key]):
            out.skipped[f"mamba:{key}"] = "tied to the embedding in the source"
        else:
            out.lm_head = Source(tensors[key], f"mamba:{key}")
    unknown = sorted(set(tensors) - used)
    if unknown:
        hint = ""
        if any(k.endswith(("in_proj.bias", "out_proj.bias")) for k in unknown):
            hint = " (use_bias=True checkpoints are not supported: our in_proj/out_proj have no bias)"
        raise WeightMismatchError(f"Mamba checkpoint {ckpt.name} has tensors with no counterpart in our SSM"
                                  f"{hint}: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out

