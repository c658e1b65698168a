"""Token caches: layout, reuse, rebuilds of corrupt or interrupted caches, splits, parallel paths."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import smt.data.cache as cache_module
from smt.config import StrideHybridConfig
from smt.data.cache import (
    CacheCorruptError,
    TokenDataset,
    build_token_dataset,
    default_cache_dir,
    split_documents,
    token_dtype,
)
from smt.data.encoding import encode_records
from smt.data.tokenizer import SMTTokenizer, check_vocab_compatible

DOCUMENTS = [
    "The first document.\nIt has two lines.\n",
    "Second: short",
    "Third document, with café and 42 numbers; the end.",
    "  Fourth  \n\n  with odd   spacing ",
]


@pytest.fixture
def corpus(tmp_path):
    """A directory with one .txt file per synthetic document (sorted names keep the order)."""
    directory = tmp_path / "corpus"
    directory.mkdir()
    for index, text in enumerate(DOCUMENTS):
        (directory / f"doc{index}.txt").write_text(text, encoding="utf-8")
    return directory


class CountingEncoder:
    """Wraps encode_records to count how many times a build tokenizes."""

    def __init__(self, fail_after_pieces: int | None = None):
        self.calls = 0
        self.fail_after_pieces = fail_after_pieces

    def __call__(self, *args, **kwargs):
        self.calls += 1
        for index, item in enumerate(encode_records(*args, **kwargs)):
            if self.fail_after_pieces is not None and index == self.fail_after_pieces:
                raise KeyboardInterrupt  # the user pressed Ctrl-C mid-build
            yield item


def build(corpus, tokenizer, cache_dir, **options):
    return build_token_dataset(corpus, tokenizer, cache_dir=cache_dir, progress=False, **options)


def test_offsets_eos_and_word_counts(corpus, gpt2_tokenizer, tmp_path):
    dataset = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    expected = [gpt2_tokenizer.encode(text) + [gpt2_tokenizer.eos_id] for text in DOCUMENTS]
    assert isinstance(dataset.tokens, np.memmap) and dataset.tokens.dtype == np.uint16
    assert dataset.tokens.tolist() == [i for doc in expected for i in doc]
    assert dataset.doc_offsets.tolist() == np.cumsum([0] + [len(d) for d in expected]).tolist()
    assert dataset.n_documents == len(DOCUMENTS) and len(dataset) == sum(map(len, expected))
    assert [dataset.document(i).tolist() for i in range(4)] == expected
    assert dataset.document(-1, include_eos=False).tolist() == expected[-1][:-1]
    assert dataset.doc_word_counts.tolist() == [len(t.split()) for t in DOCUMENTS]
    assert dataset.n_words == sum(len(t.split()) for t in DOCUMENTS)
    assert (dataset.eos_id, dataset.vocab_size) == (50256, 50257)
    with pytest.raises(IndexError):
        dataset.document(4)


def test_second_call_reuses_the_cache(corpus, gpt2_tokenizer, tmp_path, monkeypatch):
    counter = CountingEncoder()
    monkeypatch.setattr(cache_module, "encode_records", counter)
    first = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    tokens_file = first.path / "tokens.bin"
    stamp = tokens_file.stat().st_mtime_ns
    second = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    assert counter.calls == 1
    assert second.path == first.path and tokens_file.stat().st_mtime_ns == stamp
    assert np.array_equal(first.tokens, second.tokens)


def test_changed_source_or_tokenizer_gets_a_new_cache(corpus, gpt2_tokenizer, neox_tokenizer, tmp_path):
    first = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    with_neox = build(corpus, neox_tokenizer, tmp_path / "cache")
    assert with_neox.path != first.path and with_neox.eos_id == 0
    (corpus / "doc1.txt").write_text("Second: changed and longer", encoding="utf-8")
    changed = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    assert changed.path != first.path
    assert changed.document(1).tolist() == gpt2_tokenizer.encode("Second: changed and longer") + [50256]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_meta", "bad_offsets"])
def test_corrupt_cache_is_rebuilt(corpus, gpt2_tokenizer, tmp_path, damage):
    good = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    reference, path = np.array(good.tokens), good.path
    del good
    tokens_file = path / "tokens.bin"
    if damage == "flip_byte":
        data = bytearray(tokens_file.read_bytes())
        data[5] ^= 0xFF
        tokens_file.write_bytes(bytes(data))
    elif damage == "truncate":
        tokens_file.write_bytes(tokens_file.read_bytes()[:-6])
    elif damage == "drop_meta":
        (path / "meta.json").unlink()
    else:
        np.save(path / "offsets.npy", np.array([0, 3, 2, 9, 12], dtype=np.int64))
    with pytest.raises(CacheCorruptError):
        TokenDataset.load(path)
    with pytest.warns(UserWarning, match="rebuilding token cache"):
        rebuilt = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    assert rebuilt.path == path and np.array_equal(rebuilt.tokens, reference)


def test_structure_check_catches_consistent_but_wrong_offsets(corpus, gpt2_tokenizer, tmp_path):
    """A cache whose checksums were recomputed after tampering still fails the eos check."""
    path = build(corpus, gpt2_tokenizer, tmp_path / "cache").path
    offsets = np.load(path / "offsets.npy")
    offsets[1] -= 1
    np.save(path / "offsets.npy", offsets)
    meta = json.loads((path / "meta.json").read_text())
    meta["checksums"]["offsets.npy"] = cache_module._file_checksum(path / "offsets.npy")
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheCorruptError, match="offsets do not match"):
        TokenDataset.load(path)


def test_interrupted_build_leaves_nothing_trusted(corpus, gpt2_tokenizer, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(cache_module, "encode_records", CountingEncoder(fail_after_pieces=2))
    with pytest.raises(KeyboardInterrupt):
        build(corpus, gpt2_tokenizer, cache_dir)
    assert [p for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    dataset = build(corpus, gpt2_tokenizer, cache_dir)
    assert dataset.n_documents == len(DOCUMENTS)


def test_bad_file_mid_build_raises_and_leaves_no_cache(corpus, gpt2_tokenizer, tmp_path):
    # the bad bytes lie past the first 64 KiB, from which a directory's files are judged text (and
    # skipped when they are not): the build itself meets them
    (corpus / "doc2.txt").write_bytes(b"valid start " * 6000 + b"\xff\xfe broken")
    with pytest.raises(ValueError, match=r"doc2.txt is not valid utf-8 text.*offset 72000"):
        build(corpus, gpt2_tokenizer, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_leftover_temp_dir_from_a_killed_build_is_ignored(corpus, gpt2_tokenizer, tmp_path):
    cache_dir = tmp_path / "cache"
    path = build(corpus, gpt2_tokenizer, cache_dir).path
    shutil.rmtree(path)
    key = path.name
    # What a process killed with SIGKILL mid-build leaves: a temp dir with a half-written file.
    leftover = cache_dir / f".tmp-{key}-killed"
    leftover.mkdir()
    (leftover / "tokens.bin").write_bytes(b"\x01\x02\x03")
    dataset = build(corpus, gpt2_tokenizer, cache_dir)
    assert dataset.path.name == key and dataset.n_documents == len(DOCUMENTS)
    assert not leftover.exists()


def test_serial_batch_and_process_paths_agree(corpus, gpt2_tokenizer, tmp_path):
    huge_line = "word " * 40_000 + "tail"  # one 200,000-character line, encoded in pieces
    (corpus / "doc9.txt").write_text(huge_line, encoding="utf-8")
    results = [
        build(corpus, gpt2_tokenizer, tmp_path / f"cache{workers}", num_workers=workers)
        for workers in (1, None, 2)
    ]
    for other in results[1:]:
        assert np.array_equal(results[0].tokens, other.tokens)
        assert np.array_equal(results[0].doc_offsets, other.doc_offsets)
    whole = gpt2_tokenizer.tokenizer.encode(huge_line, add_special_tokens=False).ids
    assert results[0].document(-1, include_eos=False).tolist() == whole


def test_documents_spanning_small_batches(gpt2_tokenizer, book_slice):
    records = [(book_slice, 7), ("tiny", 1)]
    pieces = list(encode_records(records, gpt2_tokenizer, num_workers=None, batch_chars=1000))
    assert [words for _, _, words in pieces if words is not None] == [7, 1]
    ids = [i for _, piece_ids, _ in pieces for i in piece_ids]
    reference = gpt2_tokenizer.tokenizer.encode(book_slice, add_special_tokens=False).ids
    assert ids == reference + gpt2_tokenizer.encode("tiny")
    with pytest.raises(ValueError, match="num_workers"):
        list(encode_records(records, gpt2_tokenizer, num_workers=-1))


def test_wikitext_cache_counts_words(shared_data, gpt2_tokenizer, tmp_path):
    dataset = build(shared_data / "wikitext" / "wiki.valid.tokens", gpt2_tokenizer, tmp_path)
    assert dataset.n_documents == 60 and dataset.n_words == 217_646
    assert dataset.meta["n_words"] == 217_646
    assert int((np.asarray(dataset.tokens) == dataset.eos_id).sum()) == 60


def test_large_vocabulary_uses_uint32(corpus, tmp_path):
    vocab = {f"w{i}": i for i in range(69_999)}
    vocab.update({"The": 69_999, "[UNK]": 70_000})
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = SMTTokenizer(word_level)
    dataset = build(corpus, tokenizer, tmp_path / "cache")
    assert dataset.tokens.dtype == np.uint32 and dataset.eos_id == 70_001
    assert dataset.document(0).tolist()[0] == 69_999
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


def test_dataset_vocab_checked_against_a_model_config(corpus, gpt2_tokenizer, tmp_path):
    dataset = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    check_vocab_compatible(dataset, StrideHybridConfig.wikitext103())
    with pytest.raises(ValueError, match="50257 tokens but the model's vocab_size is 256"):
        check_vocab_compatible(dataset, StrideHybridConfig.tiny())


def test_split_documents(corpus, gpt2_tokenizer, tmp_path):
    dataset = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    train, valid = split_documents(dataset, 0.25)
    assert (train.n_documents, valid.n_documents) == (3, 1)
    assert np.array_equal(valid.document(0), dataset.document(3))
    assert np.array_equal(np.concatenate([train.tokens, valid.tokens]), dataset.tokens)
    assert train.n_words + valid.n_words == dataset.n_words
    assert valid.doc_offsets.tolist() == [0, len(dataset.document(3))]
    assert valid.meta["n_tokens"] == len(valid) and valid.meta["n_words"] == valid.n_words
    with pytest.raises(ValueError, match="valid_fraction"):
        split_documents(dataset, 1.0)
    with pytest.raises(ValueError, match="cannot split 1 document"):
        split_documents(valid, 0.5)


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SMT_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("SMT_CACHE_DIR")
    assert default_cache_dir() == default_cache_dir().home() / ".cache" / "smt" / "tokens"


def test_meta_records_checksums_and_source(corpus, gpt2_tokenizer, tmp_path):
    dataset = build(corpus, gpt2_tokenizer, tmp_path / "cache")
    meta = json.loads((dataset.path / "meta.json").read_text())
    assert set(meta["checksums"]) == {"tokens.bin", "offsets.npy", "words.npy"}
    assert meta["tokenizer"]["fingerprint"] == gpt2_tokenizer.fingerprint()
    assert [os.path.basename(f[0]) for f in meta["source"]["files"]] == [
        f"doc{i}.txt" for i in range(4)
    ]


def test_no_lock_files_pile_up_in_the_cache(corpus, gpt2_tokenizer, tmp_path):
    """A build leaves no lock file, and sweeps the ones older versions left beside finished caches."""
    (tmp_path / "old-source-0123").mkdir()
    (tmp_path / ".old-source-0123.lock").write_text("")
    (tmp_path / ".building-4567.lock").write_text("")  # no finished cache beside it: kept
    build_token_dataset(corpus, gpt2_tokenizer, cache_dir=tmp_path, progress=False)
    build_token_dataset(corpus, gpt2_tokenizer, cache_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.glob(".*.lock")] == [".building-4567.lock"]


def test_an_unwritable_cache_directory_is_named(corpus, gpt2_tokenizer, tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir) + "/.tmp-x")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(ValueError, match=r"cannot write the token cache in .*Read-only file system.*run.cache_dir"):
        build_token_dataset(corpus, gpt2_tokenizer, cache_dir=tmp_path / "cache", progress=False)
