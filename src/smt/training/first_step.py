"""Why the very first step can be non-finite. Before any update the learning rate has not acted
yet, so a NaN/inf loss or gradient at step 1 comes from the model as configured (an extreme
`ssm_dt_max` or `initializer_range` overflows float32 at initialisation or in the first forward),
or from the data: name the settings that stand out instead of blaming the learning rate."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from smt.typed_fields import field_types

FAR = 1e3  # a value more than this factor from its default stands out
# parameters whose initial values come from a config field other than initializer_range
PARAMETER_FIELDS = {"dt_proj": ("ssm_dt_min", "ssm_dt_max"), "dt_bias": ("ssm_dt_min", "ssm_dt_max"),
                    "A_log": ("ssm_d_state", "ssm_init")}


def _defaults(config) -> dict[str, float]:
    """Each float field's default, the computed ones filled in (ssm_dt_min / ssm_dt_max)."""
    default = type(config)(arch=config.arch)
    values = {f.name: getattr(default, f.name) for f in dataclasses.fields(config)}
    values["ssm_dt_min"], values["ssm_dt_max"] = default.dt_init_range
    return values


def far_from_default(config) -> list[str]:
    """`field=value (default D)` for every float setting more than FAR times from its default."""
    defaults, types = _defaults(config), field_types(type(config))
    found = []
    for f in dataclasses.fields(config):
        value, default = getattr(config, f.name), defaults.get(f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or "float" not in str(types[f.name]):
            continue
        if not isinstance(default, (int, float)) or not default or not value:
            continue
        ratio = abs(float(value) / float(default))
        if ratio > FAR or ratio < 1 / FAR:
            found.append(f"model.{f.name}={value!r} (default {default!r})")
    return found


def nonfinite_parameters(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]


def first_step_cause(model: nn.Module, config) -> str:
    """The sentence that replaces 'lower the learning rate' at step 1."""
    text = "before any update, so not the learning rate"
    bad = nonfinite_parameters(model)
    if bad:
        fields = sorted({field for name in bad for key, names in PARAMETER_FIELDS.items() if key in name
                         for field in names} or {"initializer_range"})
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        text += f": {shown} {'is' if len(bad) == 1 else 'are'} non-finite at initialisation (set by model." \
                f"{' / model.'.join(fields)})"
    suspects = far_from_default(config)
    if suspects:
        text += f"; settings far from their defaults: {', '.join(suspects)}; bring them near the defaults"
    elif not bad:
        text += "; check the model config and the training data"
    return text
