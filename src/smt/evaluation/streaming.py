"""Streaming evaluation: a whole document through any model in segments, state carried across.

The model sees the document as one stream (exactly, by the chunking invariant), while memory
stays bounded by the segment length and the model's state: a 500K-token book needs no more
than a 512-token forward at a time (the full-attention baseline's KV cache grows; that is what
the baseline is). Tokens may be a numpy memmap; only one segment is read at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from smt.evaluation.metrics import summarize, token_nll


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def stream_nll(model, tokens, segment_len: int = 512) -> np.ndarray:
    """Per-token NLL of one document: entry i is -log p(tokens[i+1] | tokens[0..i]), float32,
    len(tokens) - 1 entries, computed `segment_len` tokens per forward call."""
    if segment_len < 1:
        raise ValueError(f"segment_len={segment_len} must be >= 1")
    n = len(tokens)
    if n < 2:
        raise ValueError(f"a document of {n} token(s) has nothing to predict; it needs at least 2")
    model.eval()
    device = _device(model)
    out = np.empty(n - 1, dtype=np.float32)
    state = None
    for start in range(0, n - 1, segment_len):
        stop = min(start + segment_len, n - 1)
        piece = torch.as_tensor(np.asarray(tokens[start : stop + 1], dtype=np.int64), device=device)
        logits, aux = model(piece[None, :-1], state=state)
        state = aux["state"]
        out[start:stop] = token_nll(logits, piece[None, 1:])[0].cpu().numpy()
    return out


def iter_documents(dataset, max_documents: int | None = None, min_tokens: int = 2,
                   progress: str | None = None) -> Iterator[tuple[int, object]]:
    """(index, tokens) of each document of a TokenDataset-like object (tokens + doc_offsets);
    `progress` names a progress bar over the documents (on stderr)."""
    if progress:
        from tqdm.auto import tqdm

        total = len(dataset.doc_offsets) - 1
        total = total if max_documents is None else min(total, max_documents)
        with tqdm(total=total, desc=progress, unit="doc", dynamic_ncols=True) as bar:
            for item in iter_documents(dataset, max_documents, min_tokens):
                yield item
                bar.update(1)
        return
    for attribute in ("tokens", "doc_offsets"):
        if not hasattr(dataset, attribute):
            raise TypeError(f"expected a token dataset with .tokens and .doc_offsets (smt.data."
                            f"build_token_dataset), got {type(dataset).__name__}")
    offsets = np.asarray(dataset.doc_offsets)
    taken = 0
    for index in range(len(offsets) - 1):
        if max_documents is not None and taken >= max_documents:
            return
        start, end = int(offsets[index]), int(offsets[index + 1])
        if end - start >= min_tokens:
            taken += 1
            yield index, dataset.tokens[start:end]


def evaluate_perplexity(model, dataset, segment_len: int = 512, max_documents: int | None = None,
                        max_tokens_per_document: int | None = None, progress: bool = False) -> dict:
    """Streaming perplexity over whole documents: loss, token_ppl, bits_per_token, and word_ppl when
    the dataset has word counts and every document was read whole."""
    nll_sum, n_tokens, n_words, documents, whole = 0.0, 0, 0, 0, True
    words = getattr(dataset, "doc_word_counts", None)
    for index, tokens in iter_documents(dataset, max_documents, progress="perplexity" if progress else None):
        if max_tokens_per_document is not None and len(tokens) > max_tokens_per_document:
            tokens, whole = tokens[:max_tokens_per_document], False
        nll = stream_nll(model, tokens, segment_len)
        nll_sum += float(nll.astype(np.float64).sum())
        n_tokens += len(nll)
        documents += 1
        if words is not None:
            n_words += int(words[index])
    if documents == 0:
        raise ValueError("the dataset holds no document of 2 or more tokens")
    result = summarize(nll_sum, n_tokens, n_words if (words is not None and whole) else None)
    result["n_documents"] = documents
    return result


def sample_text(dataset, decode, pieces: int = 25, piece_tokens: int = 2000) -> str:
    """About `pieces` x `piece_tokens` tokens of a token dataset, evenly spread over it, decoded to text
    (enough to judge what kind of text it is without decoding all of it)."""
    tokens = dataset.tokens
    starts = np.linspace(0, max(0, len(tokens) - piece_tokens), num=min(pieces, max(1, len(tokens) // piece_tokens)))
    return "\n".join(decode(np.asarray(tokens[int(a): int(a) + piece_tokens]).tolist()) for a in starts)
