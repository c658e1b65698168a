"""Perplexity from summed negative log-likelihoods, per token and per word.

Published WikiText / PG-19 tables report word-level perplexity: exp(total NLL / number of
words), where the total NLL is over the model's own tokens; it makes models with different
tokenizers comparable. Word counts come with the token datasets (smt.data: WikiText counts one
<eos> per line, as its published counts do).

Word perplexity means something only where the words are words: on prose (WikiText, books) a
whitespace-separated piece is a word, in code it is `self.assertEqual(a,` or `x[0]`, so the same
count turns a fine token perplexity into millions. `letter_word_share` measures it: of the pieces
holding a letter or digit (lone punctuation such as WikiText's `@-@` or code's `==` is left out),
the share that are a word of letters with punctuation around it. Prose is far above
PROSE_WORD_SHARE (WikiText-103 valid 96%, Gutenberg books 99%), Python code below it (76% over
the standard library, 58-83% in groups of five modules), and word perplexity is reported only
above it.
"""

from __future__ import annotations

import math
import re

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
_MAX_EXPONENT = 700.0  # exp(709) is the largest finite double
PROSE_WORD_SHARE = 0.9
# a word of letters (any script; ' or - inside), with any punctuation before or after it; punctuation alone
_PUNCTUATION = re.compile(r"^[\W_]+$")
_LETTER_WORD = re.compile(r"^[\W_]*[^\W\d_]+(?:['’-][^\W\d_]+)*[\W_]*$")


def perplexity(nll_sum: float, count: int) -> float:
    """exp(nll_sum / count); inf when the mean is beyond a double's range."""
    if count <= 0:
        raise ValueError(f"count={count}: perplexity needs at least one predicted token or word")
    mean = float(nll_sum) / count
    return math.exp(mean) if mean <= _MAX_EXPONENT else float("inf")


def token_perplexity(nll_sum: float, n_tokens: int) -> float:
    return perplexity(nll_sum, n_tokens)


def word_perplexity(nll_sum: float, n_words: int) -> float:
    """Total NLL (over any tokenization of the text) divided by the text's word count."""
    return perplexity(nll_sum, n_words)


def bits_per_token(nll_sum: float, n_tokens: int) -> float:
    if n_tokens <= 0:
        raise ValueError("bits_per_token needs at least one token")
    return float(nll_sum) / n_tokens / math.log(2)


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-position NLL (float32, same shape as targets); 0 where targets == -100."""
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="none")
    return flat.view(targets.shape)


def accuracy(predictions: Tensor, targets: Tensor) -> float:
    """Fraction of positions (targets != -100) where predictions == targets."""
    mask = targets != IGNORE_INDEX
    counted = int(mask.sum())
    if counted == 0:
        raise ValueError("no scored positions (every target is -100)")
    return float(((predictions == targets) & mask).sum()) / counted


def summarize(nll_sum: float, n_tokens: int, n_words: int | None = None) -> dict:
    """loss, token perplexity, bits per token, and word perplexity when the word count is known."""
    out = {"loss": float(nll_sum) / n_tokens, "token_ppl": token_perplexity(nll_sum, n_tokens),
           "bits_per_token": bits_per_token(nll_sum, n_tokens), "n_tokens": int(n_tokens),
           "nll_sum": float(nll_sum)}
    if n_words:
        out.update(word_ppl=word_perplexity(nll_sum, n_words), n_words=int(n_words))
    return out


def letter_word_share(text: str) -> float:
    """Of the whitespace-separated pieces of `text` with a letter or digit, the share that are words of
    letters (0 when there are none)."""
    pieces = [piece for piece in text.split() if not _PUNCTUATION.match(piece)]
    return sum(1 for piece in pieces if _LETTER_WORD.match(piece)) / len(pieces) if pieces else 0.0


def words_are_prose(text: str) -> tuple[bool, str]:
    """Whether word perplexity means something on this text (see the module docstring), and why, in words."""
    share = letter_word_share(text)
    verdict = share >= PROSE_WORD_SHARE
    return verdict, (f"{share:.0%} of the text's whitespace-separated words are words of letters, "
                     f"{'at least' if verdict else 'under'} the {PROSE_WORD_SHARE:.0%} of prose")
