"""Tokenizers: loading GPT-2 / NeoX, piece-wise encoding, BPE training, vocabulary checks."""

from __future__ import annotations

import pytest

from smt.data.tokenizer import (
    DEFAULT_PIECE_CHARS,
    check_vocab_compatible,
    load_tokenizer,
    split_for_encoding,
    train_bpe_tokenizer,
    truncate_vocab,
)

SAMPLE = "Hello world! It's 2024 — naïve café, \u00e9t\u00e9.\n\n  Indented line\twith tab   and spaces.\n"


def test_gpt2_loads_and_round_trips(gpt2_tokenizer):
    assert gpt2_tokenizer.vocab_size == 50257
    assert gpt2_tokenizer.model_vocab_size == 50264
    assert gpt2_tokenizer.eos_id == 50256
    assert gpt2_tokenizer.encode("Hello world") == [15496, 995]
    assert gpt2_tokenizer.decode(gpt2_tokenizer.encode(SAMPLE)) == SAMPLE
    assert gpt2_tokenizer.encode("a<|endoftext|>b")[1] == gpt2_tokenizer.eos_id


def test_neox_loads_and_round_trips(neox_tokenizer):
    assert neox_tokenizer.eos_id == 0
    assert neox_tokenizer.decode(neox_tokenizer.encode(SAMPLE)) == SAMPLE
    # The shared tokenizer.json carries 4 added tokens after GPT-NeoX-20B's 50277 ids.
    assert neox_tokenizer.vocab_size == 50281
    original = truncate_vocab(neox_tokenizer, 50277)
    assert (original.vocab_size, original.model_vocab_size) == (50277, 50280)
    assert neox_tokenizer.encode(" assistant")[-1] == 50279
    assert max(original.encode("The assistant met RWKV fans.")) < 50277
    with pytest.raises(ValueError, match="base vocabulary"):
        truncate_vocab(neox_tokenizer, 1000)


def test_tokenizer_json_file_and_fingerprint(shared_data, neox_tokenizer, gpt2_tokenizer):
    from_file = load_tokenizer(shared_data / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")
    assert from_file.fingerprint() == neox_tokenizer.fingerprint()
    assert from_file.encode(SAMPLE) == neox_tokenizer.encode(SAMPLE)
    assert gpt2_tokenizer.fingerprint() != neox_tokenizer.fingerprint()


def test_save_and_reload(gpt2_tokenizer, tmp_path):
    path = gpt2_tokenizer.save(tmp_path / "tok")
    assert path.name == "tokenizer.json"
    again = load_tokenizer(tmp_path / "tok")
    assert again.fingerprint() == gpt2_tokenizer.fingerprint()
    assert again.encode(SAMPLE) == gpt2_tokenizer.encode(SAMPLE)
    assert again.eos_id == gpt2_tokenizer.eos_id


@pytest.mark.parametrize("piece_chars", [97, 257, 4096])
def test_pieces_encode_like_the_whole_text(gpt2_tokenizer, neox_tokenizer, book_slice, piece_chars):
    text = book_slice[:20_000] + SAMPLE
    pieces = split_for_encoding(text, piece_chars)
    assert "".join(pieces) == text
    assert all(len(piece) <= piece_chars for piece in pieces)
    for tokenizer in (gpt2_tokenizer, neox_tokenizer):
        reference = tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
        joined = [i for piece in pieces for i in tokenizer.encode(piece)]
        assert joined == reference


def test_text_without_whitespace_is_cut_hard():
    text = "x" * 1000
    pieces = split_for_encoding(text, 64)
    assert "".join(pieces) == text and max(map(len, pieces)) == 64


def test_long_text_encode_and_batch_match_reference(gpt2_tokenizer, book_slice):
    assert len(book_slice) > DEFAULT_PIECE_CHARS
    reference = gpt2_tokenizer.tokenizer.encode(book_slice, add_special_tokens=False).ids
    assert gpt2_tokenizer.encode(book_slice) == reference
    batch = gpt2_tokenizer.encode_batch([SAMPLE, book_slice, "short"])
    assert batch == [gpt2_tokenizer.encode(SAMPLE), reference, gpt2_tokenizer.encode("short")]


def test_train_tiny_bpe_on_a_book(book_slice, tmp_path):
    corpus = tmp_path / "book.txt"
    corpus.write_text(book_slice, encoding="utf-8")
    tokenizer = train_bpe_tokenizer([corpus], vocab_size=512, save_dir=tmp_path / "bpe")
    assert tokenizer.vocab_size == 512
    assert tokenizer.model_vocab_size % 8 == 0
    assert tokenizer.decode([tokenizer.eos_id]) == "<|endoftext|>"
    ids = tokenizer.encode(SAMPLE)
    assert max(ids) < 512 and tokenizer.decode(ids) == SAMPLE
    assert len(tokenizer.encode(book_slice[:5000])) < 5000 * 0.7  # merges were learned
    reloaded = load_tokenizer(tmp_path / "bpe")
    assert reloaded.fingerprint() == tokenizer.fingerprint()
    assert reloaded.encode(SAMPLE) == ids


def test_odd_vocab_is_padded_to_multiple_of_8(book_slice, tmp_path):
    corpus = tmp_path / "book.txt"
    corpus.write_text(book_slice[:30_000], encoding="utf-8")
    tokenizer = train_bpe_tokenizer([corpus], vocab_size=301, save_dir=None)
    assert (tokenizer.vocab_size, tokenizer.model_vocab_size) == (301, 304)


def test_train_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe_tokenizer([tmp_path], vocab_size=100)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_bpe_tokenizer([tmp_path / "missing.txt"], vocab_size=512)


def test_check_vocab_compatible(gpt2_tokenizer):
    check_vocab_compatible(gpt2_tokenizer, gpt2_tokenizer.model_vocab_size)
    check_vocab_compatible(gpt2_tokenizer, 50257)
    with pytest.raises(ValueError) as error:
        check_vocab_compatible(gpt2_tokenizer, 50000)
    assert "50257" in str(error.value) and "50000" in str(error.value)
    assert "model_vocab_size (50264)" in str(error.value)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "no" / "such" / "tokenizer")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json"):
        load_tokenizer(broken)


def test_unknown_hub_name_offline_is_a_clear_error():
    with pytest.raises(FileNotFoundError) as error:
        load_tokenizer("smt-test/no-such-tokenizer", local_files_only=True)
    message = str(error.value)
    assert "smt-test/no-such-tokenizer" in message and "Hugging Face Hub" in message
