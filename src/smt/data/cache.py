"""Token caches: a source tokenized once into memory-mapped arrays, reused by later runs.

Layout of cache_dir/<key>/ (key = hash of source identity incl. file sizes and mtimes, tokenizer
fingerprint and FORMAT_VERSION):
  tokens.bin   uint16 (vocab <= 65536) or uint32 ids, documents concatenated, eos after each
  offsets.npy  int64 document starts plus a final end sentinel (offsets[-1] == len(tokens))
  words.npy    int64 word count of each document (for word-level perplexity)
  meta.json    sizes, dtype, eos id, vocab size, source identity and a checksum of each file;
               written last

A build writes into a temporary directory and renames it into place, so a cache directory either
is complete or does not exist. Loading re-checks sizes, structure and checksums, and a cache that
fails any check is rebuilt, never trusted. A lock file serialises builds of the same key
(several ranks of a distributed run ask for the same cache at once).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from smt.data.encoding import encode_records
from smt.data.sources import Source, SourceLike, resolve_source
from smt.data.tokenizer import SMTTokenizer

FORMAT_VERSION = 1
DATA_FILES = ("tokens.bin", "offsets.npy", "words.npy")
_CHUNK_BYTES = 1 << 24


class CacheCorruptError(ValueError):
    """A cache directory that is incomplete, truncated or altered."""


def default_cache_dir() -> Path:
    """$SMT_CACHE_DIR, else ~/.cache/smt/tokens."""
    env = os.environ.get("SMT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "smt" / "tokens"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _file_checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class TokenDataset:
    """Token ids of a corpus (documents concatenated, eos after each) with document boundaries.

    Document i spans tokens[doc_offsets[i]:doc_offsets[i + 1]], its eos included.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        doc_offsets: np.ndarray,
        doc_word_counts: np.ndarray,
        eos_id: int,
        vocab_size: int,
        meta: dict | None = None,
        path: Path | None = None,
    ) -> None:
        self.tokens = tokens
        self.doc_offsets = doc_offsets
        self.doc_word_counts = doc_word_counts
        self.eos_id = int(eos_id)
        self.vocab_size = int(vocab_size)
        self.meta = meta or {}
        self.path = path

    @property
    def n_documents(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def n_words(self) -> int:
        return int(self.doc_word_counts.sum())

    def __len__(self) -> int:
        return len(self.tokens)

    def document(self, index: int, include_eos: bool = True) -> np.ndarray:
        """The tokens of document `index` (negative indices count from the end)."""
        if not -self.n_documents <= index < self.n_documents:
            raise IndexError(f"document {index} out of range for {self.n_documents} documents")
        index %= self.n_documents
        start, end = int(self.doc_offsets[index]), int(self.doc_offsets[index + 1])
        return self.tokens[start : end if include_eos else end - 1]

    def select_documents(self, start: int, stop: int) -> TokenDataset:
        """Documents [start, stop) as a dataset sharing this one's memory map (no copy)."""
        if not 0 <= start < stop <= self.n_documents:
            raise IndexError(f"document range [{start}, {stop}) invalid for {self.n_documents} documents")
        first, last = int(self.doc_offsets[start]), int(self.doc_offsets[stop])
        words = self.doc_word_counts[start:stop]
        counts = {"n_tokens": last - first, "n_documents": stop - start, "n_words": int(words.sum())}
        return TokenDataset(
            self.tokens[first:last],
            self.doc_offsets[start : stop + 1] - first,
            words,
            self.eos_id,
            self.vocab_size,
            meta={**self.meta, **counts, "documents_of_parent": [start, stop]},
            path=self.path,
        )

    def __repr__(self) -> str:
        return (
            f"TokenDataset(tokens={len(self)}, documents={self.n_documents}, words={self.n_words}, "
            f"vocab_size={self.vocab_size}, dtype={self.tokens.dtype}, path={self.path})"
        )

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> TokenDataset:
        """Open a cache directory; raises CacheCorruptError if anything does not check out."""
        directory = Path(directory)
        meta = _read_meta(directory)
        for name in DATA_FILES:
            if not (directory / name).is_file():
                raise CacheCorruptError(f"{directory}: {name} is missing")
            if verify and _file_checksum(directory / name) != meta["checksums"][name]:
                raise CacheCorruptError(f"{directory}: {name} does not match its checksum")
        dtype = np.dtype(meta["dtype"])
        n_tokens = int(meta["n_tokens"])
        if (directory / "tokens.bin").stat().st_size != n_tokens * dtype.itemsize:
            raise CacheCorruptError(f"{directory}: tokens.bin has the wrong size (truncated?)")
        tokens = np.memmap(directory / "tokens.bin", dtype=dtype, mode="r", shape=(n_tokens,))
        offsets = np.load(directory / "offsets.npy")
        words = np.load(directory / "words.npy")
        _check_structure(directory, meta, tokens, offsets, words)
        return cls(tokens, offsets, words, meta["eos_id"], meta["vocab_size"], meta, directory)


def _read_meta(directory: Path) -> dict:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CacheCorruptError(f"{directory}: meta.json is missing or unreadable ({error})") from error
    needed = {"format_version", "dtype", "n_tokens", "n_documents", "eos_id", "vocab_size", "checksums"}
    if not isinstance(meta, dict) or not needed <= set(meta):
        raise CacheCorruptError(f"{directory}: meta.json lacks fields {sorted(needed - set(meta))}")
    if meta["format_version"] != FORMAT_VERSION:
        raise CacheCorruptError(
            f"{directory}: cache format {meta['format_version']}, this version reads {FORMAT_VERSION}"
        )
    return meta


def _check_structure(directory: Path, meta: dict, tokens, offsets, words) -> None:
    n_documents = int(meta["n_documents"])
    ok = (
        offsets.dtype == np.int64
        and offsets.shape == (n_documents + 1,)
        and words.shape == (n_documents,)
        and offsets[0] == 0
        and offsets[-1] == len(tokens)
        and bool(np.all(np.diff(offsets) > 0))
        and bool(np.all(tokens[offsets[1:] - 1] == meta["eos_id"]))
    )
    if not ok:
        raise CacheCorruptError(f"{directory}: document offsets do not match the tokens")


def _slug(identity: dict) -> str:
    if identity["kind"] == "local":
        files = identity["files"]
        name = Path(files[0][0]).stem + (f"+{len(files) - 1}" if len(files) > 1 else "")
    else:
        name = f"{identity['repo']}-{identity['config'] or ''}-{identity['split']}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)[:48]


def cache_key(identity: dict, tokenizer: SMTTokenizer) -> str:
    """Directory name for a (source, tokenizer) pair: readable prefix + hash of everything."""
    payload = json.dumps(
        {
            "format": FORMAT_VERSION,
            "source": identity,
            "tokenizer": tokenizer.fingerprint(),
            "eos_id": tokenizer.eos_id,
        },
        sort_keys=True,
    )
    return f"{_slug(identity)}-{hashlib.sha256(payload.encode('utf-8')).hexdigest()[:16]}"


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path` where the platform and file system allow it; yields
    whether a lock is held (without one, concurrent builds are still safe, only wasteful)."""
    try:
        import fcntl

        handle = open(path, "a+")
    except (ImportError, OSError):
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_cache(
    source: Source,
    identity: dict,
    tokenizer: SMTTokenizer,
    directory: Path,
    num_workers: int | None,
    progress: bool,
) -> None:
    dtype = token_dtype(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    offsets, words = [0], []
    n_tokens = 0
    bar = tqdm(
        total=source.total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=not progress
    )
    with open(directory / "tokens.bin", "wb") as out, bar:
        for text, ids, n_words in encode_records(source.records(), tokenizer, num_workers):
            array = np.asarray(ids, dtype=dtype)
            if n_words is not None:
                array = np.concatenate([array, eos])
            out.write(array.tobytes())
            n_tokens += len(array)
            if n_words is not None:
                offsets.append(n_tokens)
                words.append(n_words)
            bar.update(len(text.encode("utf-8")))
    np.save(directory / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(directory / "words.npy", np.asarray(words, dtype=np.int64))
    for name in DATA_FILES:
        _fsync(directory / name)
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "n_tokens": n_tokens,
        "n_documents": len(words),
        "n_words": int(sum(words)),
        "eos_id": tokenizer.eos_id,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint()},
        "source": identity,
        "checksums": {name: _file_checksum(directory / name) for name in DATA_FILES},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    _fsync(directory / "meta.json")


def _load_if_valid(directory: Path) -> TokenDataset | None:
    if not directory.exists():
        return None
    try:
        return TokenDataset.load(directory)
    except CacheCorruptError as error:
        warnings.warn(f"rebuilding token cache: {error}", stacklevel=3)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def build_token_dataset(
    source: SourceLike,
    tokenizer: SMTTokenizer,
    cache_dir: str | Path | None = None,
    split: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    **source_options,
) -> TokenDataset:
    """Tokenize `source` once into cache_dir/<key>/ and return it memory-mapped; later calls with
    the same source files and tokenizer reuse the cache (a corrupt one is rebuilt).

    num_workers: None -> tokenizers batch API (all cores); 0/1 -> serial; n >= 2 -> n processes.
    source_options (text_field, encoding, file_format) go to `resolve_source`.
    """
    resolved = resolve_source(source, split, **source_options)
    identity = resolved.identity()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(identity, tokenizer)
    final = root / key
    dataset = _load_if_valid(final)  # a finished cache is read even where nothing can be written
    if dataset is not None:
        return dataset
    lock_file = root / f".{key}.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _build_lock(lock_file) as locked:
            dataset = _load_if_valid(final)
            if dataset is None:
                dataset = _build(resolved, identity, tokenizer, root, key, locked, num_workers, progress)
            if locked:  # the cache is complete: its lock file is of no more use (none pile up)
                lock_file.unlink(missing_ok=True)
                _sweep_stale_locks(root)
            return dataset
    except OSError as error:  # only the cache's own files: an unreadable data file keeps its own error
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and str(error.filename or "").startswith(str(root)):
            raise _unwritable(root, error) from error
        raise


def _sweep_stale_locks(root: Path) -> None:
    """Delete the lock files that earlier versions left beside finished caches (one per source
    ever seen), each only while holding it, so a build in progress keeps its own."""
    try:
        import fcntl
    except ImportError:
        return
    for lock in root.glob(".*.lock"):
        if not (root / lock.name[1:-len(".lock")]).is_dir():
            continue  # no finished cache beside it: a build may still need it
        try:
            with open(lock, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.unlink(missing_ok=True)
        except OSError:
            continue  # held by a running build, or not ours to delete


def _unwritable(root: Path, error: OSError) -> ValueError:
    return ValueError(f"cannot write the token cache in {root} ({error.strerror or error}); set run.cache_dir "
                      "(or the SMT_CACHE_DIR environment variable) to a writable directory")


def _build(resolved, identity: dict, tokenizer: SMTTokenizer, root: Path, key: str, locked: bool,
           num_workers: int | None, progress: bool) -> TokenDataset:
    """Tokenize into a temporary directory beside the cache and rename it into place."""
    final = root / key
    if locked:  # no build of this key runs now: leftovers are from interrupted builds
        for stale in root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    os.chmod(temporary, 0o755)
    try:
        _write_cache(resolved, identity, tokenizer, temporary, num_workers, progress)
        os.replace(temporary, final)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if locked or not final.is_dir():
            raise
        # Without a lock another process may have finished the same build first.
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return TokenDataset.load(final, verify=False)


def split_documents(dataset: TokenDataset, valid_fraction: float) -> tuple[TokenDataset, TokenDataset]:
    """(train, valid) by whole documents: the last ceil(valid_fraction * n) documents validate.
    A contiguous split keeps both halves as views of one memory map."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    n = dataset.n_documents
    if n < 2:
        raise ValueError(
            f"cannot split {n} document by whole documents; use a source with several documents "
            f"(a directory of files, WikiText articles, .jsonl records), a separate validation source, or "
            f"smt.training.data_setup.split_by_position (what `smt train` does with one document)"
        )
    n_valid = min(n - 1, max(1, int(np.ceil(valid_fraction * n))))
    return dataset.select_documents(0, n - n_valid), dataset.select_documents(n - n_valid, n)
