"""Encoding a stream of documents into token ids: serially (the reference), with the tokenizers
batch API (Rust threads), or with a pool of worker processes. All three give the same ids.

Documents are cut into bounded pieces (`split_for_encoding`) and pieces are grouped into batches
of about `batch_chars` characters, so memory stays bounded whatever the document sizes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer

from smt.data.tokenizer import SMTTokenizer, encode_batch_ids, iter_pieces_for_encoding

DEFAULT_BATCH_CHARS = 1 << 22  # 64 pieces: enough parallel work for the batch API
PROCESS_BATCH_CHARS = 1 << 20  # smaller batches keep every worker process busy
# One piece of a document: its text, and the document's word count if it is the last piece.
Piece = tuple[str, "int | None"]

_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer_json: str) -> None:
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _worker_tokenizer = Tokenizer.from_str(tokenizer_json)


def _encode_serially(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(text, add_special_tokens=False).ids for text in texts]


def _encode_in_worker(texts: list[str]) -> list[list[int]]:
    assert _worker_tokenizer is not None, "worker was started without a tokenizer"
    return encode_batch_ids(_worker_tokenizer, texts)  # single-threaded in a worker


def _pieces(records: Iterable[tuple[str, int]]) -> Iterator[Piece]:
    for text, n_words in records:
        consumed = 0
        for part in iter_pieces_for_encoding(text):
            consumed += len(part)
            yield part, (n_words if consumed == len(text) else None)


def _batches(records: Iterable[tuple[str, int]], batch_chars: int) -> Iterator[list[Piece]]:
    batch: list[Piece] = []
    size = 0
    for piece in _pieces(records):
        batch.append(piece)
        size += len(piece[0])
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _in_processes(
    batches: Iterator[list[Piece]], tokenizer: SMTTokenizer, num_workers: int
) -> Iterator[tuple[list[Piece], list[list[int]]]]:
    """Encode batches in `num_workers` processes, in order, with a bounded number in flight."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    initargs = (tokenizer.tokenizer.to_str(),)
    with context.Pool(num_workers, initializer=_init_worker, initargs=initargs) as pool:
        in_flight: deque = deque()
        for batch in batches:
            texts = [text for text, _ in batch]
            in_flight.append((batch, pool.apply_async(_encode_in_worker, (texts,))))
            if len(in_flight) >= 2 * num_workers:
                done_batch, result = in_flight.popleft()
                yield done_batch, result.get()
        while in_flight:
            done_batch, result = in_flight.popleft()
            yield done_batch, result.get()


def encode_records(
    records: Iterable[tuple[str, int]],
    tokenizer: SMTTokenizer,
    num_workers: int | None = None,
    batch_chars: int | None = None,
) -> Iterator[tuple[str, list[int], int | None]]:
    """For each piece of each (document, word count) record, in order: (piece text, its token
    ids, the document's word count if the piece ends the document else None).

    num_workers: None -> the tokenizers batch API (all cores, Rust threads); 0 or 1 -> serial
    (the reference); n >= 2 -> n worker processes.
    """
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be None or >= 0, got {num_workers}")
    use_processes = num_workers is not None and num_workers >= 2
    if batch_chars is None:
        batch_chars = PROCESS_BATCH_CHARS if use_processes else DEFAULT_BATCH_CHARS
    batches = _batches(records, batch_chars)
    if use_processes:
        encoded = _in_processes(batches, tokenizer, num_workers)
    else:
        encoded = (
            (batch, _encode_batch(tokenizer, [text for text, _ in batch], num_workers))
            for batch in batches
        )
    for batch, ids_per_piece in encoded:
        for (text, n_words), ids in zip(batch, ids_per_piece):
            yield text, ids, n_words


def _encode_batch(tokenizer: SMTTokenizer, texts: list[str], num_workers: int | None):
    if num_workers is None:
        return encode_batch_ids(tokenizer.tokenizer, texts)
    return _encode_serially(tokenizer.tokenizer, texts)
