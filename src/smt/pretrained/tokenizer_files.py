"""The tokenizer saved beside a model: tokenizer.json (Hugging Face `tokenizers` format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"


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
                         "pass a tokenizer that saves in the tokenizers JSON format")


def load_tokenizer(directory: Path) -> Any | None:
    """The tokenizer saved in `directory` (an SMTTokenizer, smt.data.tokenizer), or None when there
    is none."""
    file = directory / TOKENIZER_FILE
    if not file.is_file():
        return None
    from smt.data.tokenizer import load_tokenizer as load_smt_tokenizer

    return load_smt_tokenizer(file)
