"""Fixtures for the data pipeline tests: the shared tokenizers and a slice of a book, loaded once."""

from __future__ import annotations

import pytest

from smt.data.sources import read_text_file
from smt.data.tokenizer import load_tokenizer
from tests.conftest import shared_data_dir


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    return load_tokenizer(shared_data_dir() / "tokenizers" / "gpt2")


@pytest.fixture(scope="session")
def neox_tokenizer():
    return load_tokenizer(shared_data_dir() / "tokenizers" / "gpt-neox-20b")


@pytest.fixture(scope="session")
def book_slice() -> str:
    """The first 150,000 characters of Frankenstein."""
    book = shared_data_dir() / "gutenberg" / "valid" / "pg84-frankenstein.txt"
    return read_text_file(book)[:150_000]
