"""The tokenizer saved beside a model: tokenizer.json (Hugging Face `tokenizers` format)."""

from __future__ import annotations

import importlib
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
    """The tokenizer saved in `directory`, or None when there is none: an SMTTokenizer
    (smt.data.tokenizer) when that module is present, else a plain tokenizers.Tokenizer."""
    file = directory / TOKENIZER_FILE
    if not file.is_file():
        return None
    try:
        module = importlib.import_module("smt.data.tokenizer")
    except ModuleNotFoundError as error:
        if error.name not in ("smt.data.tokenizer", "smt.data"):
            raise
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(file))
    return module.load_tokenizer(file)
