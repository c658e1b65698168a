"""Metrics against hand-computed values; streaming NLL and loss by position against direct sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smt import StrideHybridConfig
from smt.evaluation.metrics import (
    PROSE_WORD_SHARE,
    accuracy,
    letter_word_share,
    perplexity,
    summarize,
    token_nll,
    word_perplexity,
    words_are_prose,
)
from smt.evaluation.position_loss import loss_by_position, plot_loss_by_position
from smt.evaluation.streaming import evaluate_perplexity, stream_nll
from smt.models.baselines import build_model
from smt.training.batching import TokenView


def test_words_are_prose_on_text_not_on_code(shared_data):
    import json

    assert letter_word_share("l'homme don\u2019t well-known (Z\u00fcrich), == 3.5 foo_bar a.b") == pytest.approx(4 / 7)
    wiki = (shared_data / "wikitext" / "wiki.valid.tokens").read_text(encoding="utf-8")
    books = [p.read_text(encoding="utf-8", errors="replace")
             for p in sorted((shared_data / "gutenberg").rglob("*.txt"))[:3]]
    code = [json.loads(line)["text"] for line in
            (shared_data / "code" / "valid.jsonl").read_text(encoding="utf-8").splitlines()]
    for text in [wiki, *books, (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")]:
        assert letter_word_share(text) > PROSE_WORD_SHARE + 0.04
    assert letter_word_share("".join(code)) < PROSE_WORD_SHARE - 0.1
    assert all(letter_word_share("".join(code[i : i + 5])) < PROSE_WORD_SHARE for i in range(0, len(code), 5))
    prose, why = words_are_prose("".join(code))
    assert not prose and "under the 90% of prose" in why


def test_word_perplexity_by_hand():
    # "the cat sat" as 5 tokens with probabilities 1/2, 1/4, 1/2, 1/8, 1/2 -> NLL = 8 ln 2
    nll = -sum(math.log(p) for p in (0.5, 0.25, 0.5, 0.125, 0.5))
    assert word_perplexity(nll, 3) == pytest.approx(2 ** (8 / 3))
    assert perplexity(nll, 5) == pytest.approx(2 ** (8 / 5))
    record = summarize(nll, 5, 3)
    assert record["bits_per_token"] == pytest.approx(8 / 5)
    assert record["word_ppl"] == pytest.approx(2 ** (8 / 3))
    assert perplexity(1e6, 1) == float("inf")
    with pytest.raises(ValueError, match="count"):
        perplexity(1.0, 0)


def test_accuracy_and_token_nll_by_hand():
    assert accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, -100])) == pytest.approx(2 / 3)
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    nll = token_nll(logits, torch.tensor([[1, -100]]))
    torch.testing.assert_close(nll, torch.tensor([[math.log(4), 0.0]]))


def tiny(arch: str):
    torch.manual_seed(0)
    return build_model(StrideHybridConfig.tiny(arch=arch)).eval()


def direct_nll(model, tokens) -> np.ndarray:
    ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64))[None]
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    return token_nll(logits, ids[:, 1:])[0].numpy()


@pytest.mark.parametrize("arch", ["smt", "gpt", "mamba"])
def test_stream_nll_equals_one_call(arch):
    model = tiny(arch)
    tokens = np.random.default_rng(0).integers(0, 256, 70)
    np.testing.assert_allclose(stream_nll(model, tokens, segment_len=9), direct_nll(model, tokens), atol=2e-5)


def corpus(lengths, words=None) -> TokenView:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 255, sum(lengths)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenView(tokens, offsets, 255, 256, None if words is None else np.asarray(words))


def test_loss_by_position_is_the_mean_of_per_token_losses(tmp_path):
    model = tiny("smt")
    view = corpus([30, 12, 41])
    curve, counts = loss_by_position(model, view, max_positions=35, segment_len=8)
    docs = [view.tokens[a:b] for a, b in zip(view.doc_offsets[:-1], view.doc_offsets[1:])]
    per_doc = [direct_nll(model, d[:36]) for d in docs]
    for p in (0, 10, 11, 28, 34):
        values = [nll[p] for nll in per_doc if len(nll) > p]
        assert counts[p] == len(values)
        assert curve[p] == pytest.approx(np.mean(values), abs=1e-5)
    png = plot_loss_by_position({"smt": curve, "other": curve + 0.1}, tmp_path / "curve.png", window=8)
    assert png.stat().st_size > 1000


def test_loss_by_position_in_pieces_averages_every_piece_from_a_fresh_state():
    model = tiny("smt")
    view = corpus([30, 12])
    curve, counts = loss_by_position(model, view, max_positions=9, segment_len=4, pieces=True)
    docs = [view.tokens[a:b] for a, b in zip(view.doc_offsets[:-1], view.doc_offsets[1:])]
    pieces = [d[s: s + 10] for d in docs for s in range(0, len(d) - 1, 10)]  # 30 -> 3 pieces of 10, 12 -> 10 + 2
    per_piece = [direct_nll(model, p) for p in pieces if len(p) >= 2]
    assert counts[0] == 5 and counts[8] == 4  # the 2-token tail of the 12-token document stops at 0
    for p in (0, 1, 8):
        assert curve[p] == pytest.approx(np.mean([nll[p] for nll in per_piece if len(nll) > p]), abs=1e-5)


def test_evaluate_perplexity_token_and_word_level():
    model = tiny("swa")
    view = corpus([20, 25], words=[7, 9])
    result = evaluate_perplexity(model, view, segment_len=6)
    total = sum(direct_nll(model, view.tokens[a:b]).astype(np.float64).sum()
                for a, b in zip(view.doc_offsets[:-1], view.doc_offsets[1:]))
    assert result["n_tokens"] == 19 + 24 and result["n_documents"] == 2
    assert result["token_ppl"] == pytest.approx(math.exp(total / 43), rel=1e-5)
    assert result["word_ppl"] == pytest.approx(math.exp(total / 16), rel=1e-5)
    partial = evaluate_perplexity(model, view, segment_len=6, max_tokens_per_document=10)
    assert "word_ppl" not in partial  # words of a cut document are unknown
