"""GPT-2 (Hugging Face GPT2LMHeadModel / GPT2Model layout) -> our transformer.

GPT-2 stores its projections as Conv1D with weight (in, out); ours are nn.Linear with weight
(out, in), so those weights are transposed. Everything else maps by name.
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

BLOCK_PARAMS = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = ("attn.bias", "attn.masked_bias")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _check_shapes(ckpt: Checkpoint, names: dict[str, str], config: StrideHybridConfig) -> None:
    tensors, where = ckpt.tensors, f"GPT-2 checkpoint {ckpt.name}"
    d = tensors[names["wte.weight"]].shape[1]
    if d != config.d_model:
        raise WeightMismatchError(f"{where} has d_model (n_embd) {d} but config.d_model={config.d_model}; "
                                  f"set d_model={d}")
    layers = layer_indices(names, "h.")
    if len(layers) != config.transformer_n_layers:
        raise WeightMismatchError(f"{where} has {len(layers)} transformer layers but config.transformer_n_layers="
                                  f"{config.transformer_n_layers}; set transformer_n_layers={len(layers)}")
    n_head = ckpt.config.get("n_head")
    if n_head is not None and n_head != config.n_heads:
        raise WeightMismatchError(f"{where} has n_head={n_head} but config.n_heads={config.n_heads}; "
                                  f"set n_heads={n_head}")
    fc = names.get("h.0.mlp.c_fc.weight")
    if fc is not None and tensors[fc].shape[1] != config.ffn_dim:
        raise WeightMismatchError(f"{where} has an MLP width of {tensors[fc].shape[1]} but the config's "
                                  f"is {config.ffn_dim}; set d_ff={tensors[fc].shape[1]}")


def _notes(ckpt: Checkpoint, config: StrideHybridConfig) -> list[str]:
    cfg, notes = ckpt.config, []
    if not cfg:
        notes.append(f"GPT-2 {ckpt.name}: no config.json; n_heads={config.n_heads} is assumed (it cannot "
                     "be read from the weights)")
    eps = cfg.get("layer_norm_epsilon")
    if eps is not None and abs(eps - config.layer_norm_eps) > 1e-12:
        notes.append(f"GPT-2 layer_norm_epsilon={eps} differs from config.layer_norm_eps={config.layer_norm_eps}")
    act = cfg.get("activation_function")
    if act is not None and act not in TANH_GELUS:
        notes.append(f"GPT-2 activation_function={act!r}, but our MLP uses tanh-approximate GELU (gelu_new)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if cfg.get(flag):
            notes.append(f"GPT-2 {flag}=True is not reproduced by our attention")
    if cfg.get("scale_attn_weights") is False:
        notes.append("GPT-2 scale_attn_weights=False is not reproduced (we scale by 1/sqrt(d_head))")
    if config.position == "rope":
        notes.append("GPT-2 blocks were trained with learned absolute positions; with position='rope' "
                     "they need fine-tuning (use position='learned' for exact GPT-2 behaviour)")
    return notes


def map_gpt2(ckpt: Checkpoint, config: StrideHybridConfig) -> MappedCheckpoint:
    """GPT-2 tensors under our names; refuses when shapes do not fit `config`."""
    names = {strip_prefix(k, ("transformer.",)): k for k in ckpt.tensors}
    if "wte.weight" not in names or "ln_f.weight" not in names:
        raise WeightMismatchError(f"{ckpt.name} does not look like a GPT-2 checkpoint (no wte.weight / "
                                  "ln_f.weight); expected Hugging Face GPT2LMHeadModel tensor names")
    _check_shapes(ckpt, names, config)
    tensors = ckpt.tensors
    out = MappedCheckpoint("gpt2", notes=_notes(ckpt, config))
    used = set()
    for i in range(config.transformer_n_layers):
        for param in BLOCK_PARAMS:
            ours = f"h.{i}.{param}"
            if ours not in names:
                raise WeightMismatchError(f"GPT-2 checkpoint {ckpt.name} lacks {ours}")
            key = names[ours]
            used.add(key)
            if param in CONV1D_WEIGHTS:
                source = Source(tensors[key].t().contiguous(), f"gpt2:{key} (Conv1D, transposed)")
            else:
                source = Source(tensors[key], f"gpt2:{key}")
            out.tensors[f"transformer.{ours}"] = source
        for buffer in MASK_BUFFERS:
            key = names.get(f"h.{i}.{buffer}")
            if key is not None:
                used.add(key)
                out.skipped[f"gpt2:{key}"] = "causal-mask buffer, not a weight"
    for param in ("ln_f.weight", "ln_f.bias"):
        used.add(names[param])
        out.tensors[f"transformer.{param}"] = Source(tensors[names[param]], f"gpt2:{names[param]}")
    wte = names["wte.weight"]
    used.add(wte)
    out.embedding = Source(tensors[wte], f"gpt2:{wte}")
    if "wpe.weight" in names:
        used.add(names["wpe.weight"])
        out.positions = Source(tensors[names["wpe.weight"]], f"gpt2:{names['wpe.weight']}")
    if "lm_head.weight" in names:
        used.add(names["lm_head.weight"])
        head = tensors[names["lm_head.weight"]]
        if same_values(head, tensors[wte]):
            out.skipped[f"gpt2:{names['lm_head.weight']}"] = "tied to wte in the source"
        else:
            out.lm_head = Source(head, f"gpt2:{names['lm_head.weight']}")
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise WeightMismatchError(f"GPT-2 checkpoint {ckpt.name} has tensors with no counterpart in our "
                                  f"transformer: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out
