"""Tokenizers: load GPT-2 / GPT-NeoX / hub tokenizers, train small byte-level BPEs, check vocabularies.

Everything is a Hugging Face `tokenizers.Tokenizer` underneath, wrapped by `SMTTokenizer`, which
adds the project's conventions: an end-of-document token (`eos_id`), the model vocabulary padded
to a multiple of 8 (`model_vocab_size`), a stable fingerprint for cache keys, and encoding of long
texts in bounded pieces (so a 1 GB single-line file does not need gigabytes of `Encoding` objects).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from smt.config import pad_vocab_size

EOS_TOKEN = "<|endoftext|>"
# Texts longer than this are encoded in pieces cut at word boundaries (iter_pieces_for_encoding).
DEFAULT_PIECE_CHARS = 1 << 16
# A hub id is "name" or "owner/name" made of these characters.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def encode_batch_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids of each text via the parallel batch API; `encode_batch_fast` (tokenizers >= 0.21)
    skips computing character offsets, which we never use, and is much faster."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]


def _find_cut(text: str, lo: int, hi: int) -> int:
    """The last index in [lo, hi) where a whitespace run starts right after a non-whitespace
    character (searched for spaces, then newlines, then tabs); `hi` when there is none."""
    for whitespace in (" ", "\n", "\t"):
        end = hi
        while (pos := text.rfind(whitespace, lo, end)) != -1:
            if not text[pos - 1].isspace():
                return pos
            end = pos
    return hi


def iter_pieces_for_encoding(text: str, piece_chars: int = DEFAULT_PIECE_CHARS) -> Iterator[str]:
    """Lazily cut `text` into pieces of at most `piece_chars` characters whose encodings
    concatenate to the encoding of the whole text.

    Pieces are cut where a whitespace run begins after a non-whitespace character. The GPT-2 /
    byte-level pre-tokenizer regex never lets a pre-token run from a word into the whitespace that
    follows it, so such a cut is always a pre-token boundary and the tokens do not change. A text
    with no whitespace in half a piece (rare: base64 blobs, CJK without spaces) is cut hard.
    Tokenizers with added tokens that contain inner whitespace (none in GPT-2/NeoX) are the one
    case where a cut could change tokens.
    """
    if piece_chars < 2:
        raise ValueError(f"piece_chars must be at least 2, got {piece_chars}")
    start = 0
    while len(text) - start > piece_chars:
        cut = _find_cut(text, start + max(1, piece_chars // 2), start + piece_chars)
        yield text[start:cut]
        start = cut
    yield text[start:]


def split_for_encoding(text: str, piece_chars: int = DEFAULT_PIECE_CHARS) -> list[str]:
    """All pieces of `iter_pieces_for_encoding` as a list."""
    return list(iter_pieces_for_encoding(text, piece_chars))


class SMTTokenizer:
    """A `tokenizers.Tokenizer` plus an end-of-document token and the padded model vocabulary.

    A tokenizer without `eos_token` gets it added as a special token (in place).
    """

    def __init__(self, tokenizer: Tokenizer, eos_token: str = EOS_TOKEN, name: str = "") -> None:
        eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            # Documents must be separable; a tokenizer without the token gets it as a special token.
            tokenizer.add_special_tokens([eos_token])
            eos_id = tokenizer.token_to_id(eos_token)
        self.tokenizer = tokenizer
        self.eos_token = eos_token
        self.eos_id: int = int(eos_id)
        self.name = name
        largest = max(tokenizer.get_vocab(with_added_tokens=True).values())
        self._vocab_size = max(tokenizer.get_vocab_size(with_added_tokens=True), largest + 1)
        self._fingerprint: str | None = None

    @property
    def vocab_size(self) -> int:
        """The number of token ids the tokenizer can produce (largest id + 1)."""
        return self._vocab_size

    @property
    def model_vocab_size(self) -> int:
        """`vocab_size` padded to a multiple of 8: the embedding size a model should use."""
        return pad_vocab_size(self.vocab_size)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added); long texts are encoded in pieces."""
        if len(text) <= DEFAULT_PIECE_CHARS:
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Token ids of each text, encoded in parallel by the tokenizers thread pool (long texts
        are split into pieces first, so every piece is a unit of parallel work)."""
        pieces: list[str] = []
        owners: list[int] = []
        n_texts = 0
        for index, text in enumerate(texts):
            n_texts += 1
            for piece in split_for_encoding(text):
                pieces.append(piece)
                owners.append(index)
        results: list[list[int]] = [[] for _ in range(n_texts)]
        for owner, ids in zip(owners, encode_batch_ids(self.tokenizer, pieces)):
            results[owner].extend(ids)
        return results

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` (a list, NumPy array or tensor); special tokens are kept."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json into `directory` (created if needed); returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "tokenizer.json"
        self.tokenizer.save(str(path))
        return path

    def fingerprint(self) -> str:
        """A stable hash of the tokenizer's JSON (key order normalised) and its eos token."""
        if self._fingerprint is None:
            canonical = json.dumps(json.loads(self.tokenizer.to_str()), sort_keys=True)
            digest = hashlib.sha256(canonical.encode("utf-8"))
            digest.update(self.eos_token.encode("utf-8"))
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"SMTTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"model_vocab_size={self.model_vocab_size}, eos_id={self.eos_id})"
        )


def _byte_level_bpe(model: models.BPE) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _from_vocab_and_merges(directory: Path) -> Tokenizer:
    """A GPT-2 style directory (vocab.json + merges.txt) as a byte-level BPE tokenizer."""
    model = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer = _byte_level_bpe(model)
    if tokenizer.token_to_id(EOS_TOKEN) is not None:
        tokenizer.add_special_tokens([EOS_TOKEN])  # matched whole, never split into bytes
    return tokenizer


def _from_local_path(path: Path) -> Tokenizer:
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as error:
            raise ValueError(
                f"{path} is not a tokenizer.json file that Hugging Face tokenizers can read ({error})"
            ) from error
    if (path / "tokenizer.json").is_file():
        return _from_local_path(path / "tokenizer.json")
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return _from_vocab_and_merges(path)
    found = sorted(p.name for p in path.iterdir())[:10]
    raise ValueError(
        f"tokenizer directory {path} holds neither tokenizer.json nor vocab.json + merges.txt "
        f"(found: {found}); point to a directory with one of those, or to a tokenizer.json file"
    )


def _from_hub(name: str, local_files_only: bool) -> tuple[Tokenizer, str]:
    from transformers import AutoTokenizer  # slow import, only needed for hub names

    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"tokenizer {name!r} is not a local file or directory, and it could not be found on "
            f"the Hugging Face Hub or in its local cache (offline? set HF_HUB_OFFLINE=1 to fail "
            f"fast). Pass a local directory with tokenizer.json or vocab.json + merges.txt. "
            f"Cause: {str(error).splitlines()[0]}"
        ) from error
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"tokenizer {name!r} has no fast (Rust) version; convert it to tokenizer.json first"
        )
    eos = EOS_TOKEN if backend.token_to_id(EOS_TOKEN) is not None else hf_tokenizer.eos_token
    return backend, eos or EOS_TOKEN


def load_tokenizer(path_or_name: str | Path, local_files_only: bool = False) -> SMTTokenizer:
    """Load a tokenizer from a local directory (tokenizer.json, or GPT-2 style vocab.json +
    merges.txt), a tokenizer.json file, or else a Hugging Face Hub name via transformers."""
    path = Path(path_or_name).expanduser()
    if path.exists():
        return SMTTokenizer(_from_local_path(path), name=str(path))
    name = str(path_or_name)
    if not _HUB_ID.match(name):
        raise FileNotFoundError(
            f"tokenizer path {name!r} does not exist (and is not a Hugging Face Hub name)"
        )
    tokenizer, eos = _from_hub(name, local_files_only)
    return SMTTokenizer(tokenizer, eos_token=eos, name=name)


def train_bpe_tokenizer(
    files: Sequence[str | Path],
    vocab_size: int,
    save_dir: str | Path | None = None,
    min_frequency: int = 2,
    progress: bool = False,
    **source_options: Any,
) -> SMTTokenizer:
    """Train a byte-level BPE with `vocab_size` ids (256 bytes + merges + '<|endoftext|>').

    `files` are any sources `smt.data.sources` reads (text files, directories, .jsonl, WikiText),
    so bad files fail with the same clear errors as the data pipeline; `source_options`
    (encoding, text_field) say how to read them.
    """
    from smt.data.sources import iter_documents

    min_size = len(pre_tokenizers.ByteLevel.alphabet()) + 1
    if vocab_size < min_size:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least "
            f"{min_size} (256 byte tokens + {EOS_TOKEN}); choose e.g. 512 or more"
        )
    if not files:
        raise ValueError("train_bpe_tokenizer needs at least one training file")

    def texts() -> Iterator[str]:
        for source in files:
            for document in iter_documents(source, **source_options):
                yield from split_for_encoding(document)

    tokenizer = _byte_level_bpe(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tokenizer.train_from_iterator(texts(), trainer=trainer)
    result = SMTTokenizer(tokenizer, name=f"bpe{vocab_size}")
    if save_dir is not None:
        result.save(save_dir)
        result.name = str(save_dir)
    return result


def check_vocab_compatible(tokenizer: SMTTokenizer, model_vocab_size: int) -> None:
    """Raise ValueError unless every token id of `tokenizer` (or of a TokenDataset: anything
    with .vocab_size) fits a model whose embedding has `model_vocab_size` rows (an int, or a
    config with .vocab_size)."""
    model_vocab_size = int(getattr(model_vocab_size, "vocab_size", model_vocab_size))
    if tokenizer.vocab_size > model_vocab_size:
        name = getattr(tokenizer, "name", "") or ""
        raise ValueError(
            f"tokenizer {name} has {tokenizer.vocab_size} tokens but the model's "
            f"vocab_size is {model_vocab_size}: token ids would fall outside the embedding. Set the "
            f"model's vocab_size to tokenizer.model_vocab_size ({pad_vocab_size(tokenizer.vocab_size)}), or "
            f"use the tokenizer the model was trained with"
        )


def truncate_vocab(tokenizer: SMTTokenizer, vocab_size: int) -> SMTTokenizer:
    """A copy of `tokenizer` without the added tokens whose id is `vocab_size` or more.

    Some redistributed tokenizer.json files carry extra added tokens after the original
    vocabulary (the shared GPT-NeoX file adds '<|im_start|>', '<|im_end|>', 'assistant' and
    'RWKV' as ids 50277-50280). Added tokens are matched before BPE, so they change how ordinary
    words are tokenized; `truncate_vocab(neox, 50277)` restores the original GPT-NeoX-20B tokenizer.
    """
    data = json.loads(tokenizer.tokenizer.to_str())
    if max(data["model"].get("vocab", {0: 0}).values(), default=0) >= vocab_size:
        raise ValueError(
            f"cannot truncate {tokenizer.name or 'the tokenizer'} to {vocab_size} ids: its base "
            f"vocabulary is larger; only added tokens can be dropped"
        )
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < vocab_size]
    truncated = Tokenizer.from_str(json.dumps(data))
    return SMTTokenizer(truncated, eos_token=tokenizer.eos_token, name=tokenizer.name)
