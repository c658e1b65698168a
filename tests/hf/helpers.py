"""Tiny models, a word-level tokenizer and saved model directories for the transformers tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from smt import StrideHybridConfig
from smt.model_directory import save_model_dir
from smt.models import build_model

VOCAB = 64
EOS_ID = 1
SCALE = 0.5


def tiny_tokenizer(with_eos: bool = True) -> Tokenizer:
    """A word-level tokenizer over the model's 64 ids: "<unk>", "<|endoftext|>" (id 1), w0 .. w61."""
    words = ["<unk>", "<|endoftext|>" if with_eos else "<pad>"] + [f"w{i}" for i in range(VOCAB - 2)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece()  # joins words with spaces
    return tokenizer


def tiny_native(arch: str = "smt", seed: int = 0, **overrides):
    """A tiny native model of `arch` in eval mode, with every weight perturbed (a fresh model's
    zeros and ones would hide mix-ups, and its greedy decoding repeats one token)."""
    torch.manual_seed(seed)
    if arch == "swa":
        overrides.setdefault("n_ssm_outputs", 0)
    overrides.setdefault("vocab_size", VOCAB)
    model = build_model(StrideHybridConfig.tiny(arch=arch, **overrides)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(SCALE * torch.randn(p.shape, generator=generator))
    return model


def save(model, directory: Path, tokenizer=None, **kwargs) -> Path:
    save_model_dir(model, directory, tokenizer, **kwargs)
    return directory


def prompt(batch: int = 2, length: int = 11, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=generator)
