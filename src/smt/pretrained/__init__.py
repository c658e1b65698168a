"""Pretrained weights: start SMT from GPT-2 and Mamba checkpoints, save and share SMT models.

- from_components(config, gpt2=..., mamba=...): GPT-2 blocks -> transformer, Mamba -> SSM, with
  a LoadReport of what was loaded and what is new (model.load_report).
- save_pretrained(model, dir, tokenizer=None) / from_pretrained(dir_or_repo): config.json +
  model.safetensors (+ tokenizer.json); load_model_dir(path) -> (model, tokenizer or None).
- init_model(config, init_from): the starting model for a training config's `init_from:`.
"""

from smt.model_directory import read_config
from smt.pretrained.components import from_components
from smt.pretrained.mapping import WeightMismatchError
from smt.pretrained.report import LoadReport
from smt.pretrained.sharing import (
    from_pretrained,
    init_model,
    is_model_dir,
    load_model_dir,
    save_pretrained,
)

__all__ = [
    "LoadReport",
    "WeightMismatchError",
    "from_components",
    "from_pretrained",
    "init_model",
    "is_model_dir",
    "load_model_dir",
    "read_config",
    "save_pretrained",
]
