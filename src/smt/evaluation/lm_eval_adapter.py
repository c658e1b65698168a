"""SMT (and its baselines) as an lm-evaluation-harness model: `--model smt`.

    python -m smt.evaluation.lm_eval_adapter --model smt --model_args pretrained=RUN_DIR \
        --tasks wikitext,arc_easy --batch_size 16 [--include_path MY_TASKS] ...
    smt evaluate --tasks wikitext,arc_easy --model RUN_DIR [--limit N] [--include-path DIR] [--out FILE]

Importing this module registers the class under the name "smt" in lm_eval's model registry.
lm_eval 0.4.x discovers no models outside its own package (no entry points, no plugin
option), so a plain `lm_eval --model smt` does not know the name; `python -m
smt.evaluation.lm_eval_adapter ARGS` is lm_eval's own command line (the same arguments) run
after that import, and `smt evaluate` calls `lm_eval.simple_evaluate` after it. From Python:
`import smt.evaluation.lm_eval_adapter` then `lm_eval.simple_evaluate(model="smt", ...)`, or
pass `SMTLM(model=..., tokenizer=...)` itself.

model_args: pretrained (a model directory, a training step directory, checkpoints/ or a run
directory: its best checkpoint, else its latest, as `smt eval --checkpoint`), tokenizer (a
tokenizer.json or directory, default the model directory's), device (default cpu),
batch_size (rows per forward call, default 16), segment_len (tokens per forward call along a
stream, default 512, as `smt eval`), rolling ("smt" or "eos_prefix", see
`SMTLM.loglikelihood_rolling`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from smt.evaluation.streaming import stream_nll

logger = logging.getLogger(__name__)

ROLLING_CONVENTIONS = ("smt", "eos_prefix")
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256
GENERATE_CHUNK = 16  # tokens generated between two checks of the `until` strings
_SAMPLING_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p", "seed"}


def load_model_and_tokenizer(pretrained: str | Path, tokenizer: Any = None, device: str = "cpu"):
    """(model in eval mode, SMTTokenizer, resolved directory), as `smt eval` loads them; the
    tokenizer is the directory's tokenizer.json unless `tokenizer` names another."""
    from smt.data import load_tokenizer
    from smt.models import load_model
    from smt.training.checkpoint import resolve_checkpoint

    directory = resolve_checkpoint(pretrained)
    model = load_model(directory, device)
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return model, tokenizer, directory  # an SMTTokenizer already
    if tokenizer is None:
        if not (directory / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{directory} has no tokenizer.json; pass tokenizer=PATH in --model_args "
                                    "(the tokenizer the model was trained with)")
        tokenizer = directory / "tokenizer.json"
    return model, load_tokenizer(tokenizer, local_files_only=True), directory


def _batch_size(value: Any) -> int:
    """lm_eval's batch_size: an int, a digit string, or 'auto' / 'auto:N' (taken as the default)."""
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return DEFAULT_BATCH_SIZE
    return positive_int("batch_size", value)


def positive_int(name: str, value: Any) -> int:
    """A model argument that must be a whole number >= 1 (lm_eval passes `--model_args` values as text)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or isinstance(value, float) and value != number or number < 1:
        raise ValueError(f"{name}={value!r} in --model_args: must be a whole number >= 1, e.g. {name}=512")
    return number


@register_model("smt")
class SMTLM(TemplateLM):
    """lm_eval's three request types on an SMT model directory (any arch: smt, swa, gpt, mamba).

    Every model here streams: `forward(ids, state)` continues from `aux["state"]`, so a document
    of any length is read in `segment_len`-token calls with the state carried, and a context
    shared by several continuations (the choices of a multiple-choice question) is read once.
    """

    backend = "causal"

    def __init__(self, pretrained: str | Path | None = None, tokenizer: Any = None, device: str | None = None,
                 batch_size: int | str | None = None, segment_len: int | str = 512, rolling: str = "smt",
                 model: torch.nn.Module | None = None, max_batch_size: int | None = None, **unused: Any) -> None:
        super().__init__()
        if unused:
            logger.warning("smt: ignoring model arguments %s", sorted(unused))
        if (pretrained is None) == (model is None):
            raise ValueError("pass pretrained=DIR (a model or checkpoint directory), or model= and tokenizer= "
                             "objects, not both")
        if rolling not in ROLLING_CONVENTIONS:
            raise ValueError(f"rolling={rolling!r}: choose one of {', '.join(ROLLING_CONVENTIONS)}")
        segment_len = positive_int("segment_len", segment_len)
        if model is None:
            model, tokenizer, directory = load_model_and_tokenizer(pretrained, tokenizer, device or "cpu")
            self.pretrained = str(directory)
        else:
            if tokenizer is None or isinstance(tokenizer, (str, Path)):
                from smt.data import load_tokenizer

                if tokenizer is None:
                    raise ValueError("model= needs tokenizer= (an SMTTokenizer or a tokenizer.json path)")
                tokenizer = load_tokenizer(tokenizer, local_files_only=True)
            if device is not None:
                model = model.to(device)
            self.pretrained = None
        from smt.data.tokenizer import check_vocab_compatible

        check_vocab_compatible(tokenizer, model.config.vocab_size)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = _batch_size(batch_size)
        self.segment_len = segment_len
        self.rolling = rolling
        self._device = next(model.parameters()).device

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def tokenizer_name(self) -> str:
        return f"smt-{self.tokenizer.fingerprint()}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """The model's tokens of `string`; nothing is added (the tokenizers have no BOS)."""
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens)

    # ------------------------------------------------------------- streaming
    def _stream(self, ids: Sequence[int], state=None):
        """The state after reading `ids` (one stream), `segment_len` tokens per call."""
        for start in range(0, len(ids), self.segment_len):
            piece = torch.as_tensor(list(ids[start : start + self.segment_len]), dtype=torch.long,
                                    device=self._device)
            _, aux = self.model(piece[None], state=state)
            state = aux["state"]
        return state

    @staticmethod
    def _rows(state, rows: int):
        """`state` (one stream) repeated for `rows` streams; None stays None (fresh streams)."""
        if state is None:
            return None
        return state.select(torch.zeros(rows, dtype=torch.long, device=state.position.device))

    # ---------------------------------------------------------- loglikelihood
    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Sum of log p(continuation | context) and whether greedy decoding gives the continuation.

        Requests are grouped by context: each context is streamed once (all but its last token),
        then its continuations run as rows of one batch from copies of that state, right-padded
        (the models are causal, so padding after a row's end changes none of its scores).
        """
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (_, context, continuation) in enumerate(requests):
            if not continuation:
                raise ValueError(f"request {requests[index][0]!r}: the continuation has no tokens")
            groups.setdefault(tuple(context), []).append(index)
        bar = tqdm(total=len(requests), desc="smt loglikelihood", disable=disable_tqdm)
        for context, members in groups.items():
            state = self._stream(context[:-1])
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                conts = [list(requests[i][2]) for i in batch]
                for i, scored in zip(batch, self._score_rows(context[-1], conts, state)):
                    results[i] = scored
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], scored)
                bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]

    def _score_rows(self, last: int, conts: list[list[int]], state) -> list[tuple[float, bool]]:
        """Rows [last] + cont[:-1] from `state`, in `segment_len` calls; per row (sum log p(cont), greedy)."""
        rows, length = len(conts), max(len(c) for c in conts)
        inputs = torch.full((rows, length), self.eot_token_id, dtype=torch.long)
        targets = torch.full((rows, length), -1, dtype=torch.long)
        for r, cont in enumerate(conts):
            inputs[r, : len(cont)] = torch.as_tensor([last] + cont[:-1])
            targets[r, : len(cont)] = torch.as_tensor(cont)
        inputs, targets = inputs.to(self._device), targets.to(self._device)
        logprob = torch.zeros(rows, dtype=torch.float64, device=self._device)
        greedy = torch.ones(rows, dtype=torch.bool, device=self._device)
        state = self._rows(state, rows)
        for s in range(0, length, self.segment_len):
            logits, aux = self.model(inputs[:, s : s + self.segment_len], state=state)
            state = aux["state"]
            logits = logits.float()  # log p = logit - logsumexp, without a second vocabulary-sized tensor
            target = targets[:, s : s + self.segment_len]
            mask = target >= 0
            picked = logits.gather(-1, target.clamp(min=0)[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
            logprob += torch.where(mask, picked.double(), 0.0).sum(-1)
            greedy &= ((logits.argmax(-1) == target) | ~mask).all(-1)
        return [(float(lp), bool(g)) for lp, g in zip(logprob.tolist(), greedy.tolist())]

    @torch.no_grad()
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole document, read as one stream: no windows.

        lm_eval's Hugging Face model cuts a document longer than the model's maximum length into
        disjoint windows of that length, each read from scratch, so the first tokens of every
        window see nothing of the document before it. Here the document streams through the model
        in `segment_len`-token calls with the stream state carried (`aux["state"]`): every token
        is predicted from the whole document before it, at a constant cost per token, and the
        result does not depend on `segment_len` (up to float rounding).

        rolling="smt" (default) is exactly `smt eval`'s streamed NLL of the text (`stream_nll` on
        the text's tokens plus the end-of-document token, as smt's token datasets store a
        document): the first token is not scored (there is nothing before it) and the closing
        eos is. rolling="eos_prefix" is lm_eval's convention: the eos token as the context and
        every token of the text scored, no eos after it. Both score as many tokens as the text has.
        """
        results = []
        for request in tqdm(requests, desc="smt loglikelihood_rolling", disable=disable_tqdm):
            (text,) = request.args
            ids = self.tok_encode(text)
            tokens = ids + [self.eot_token_id] if self.rolling == "smt" else [self.eot_token_id] + ids
            if len(tokens) < 2:
                value = 0.0
            else:
                value = -float(stream_nll(self.model, np.asarray(tokens, dtype=np.int64),
                                          self.segment_len).astype(np.float64).sum())
            results.append(value)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), value)
        return results

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continue each context with the model's own `generate` (greedy unless do_sample), and
        cut the text at the first `until` string (or the eos token).

        Generation runs in chunks of GENERATE_CHUNK tokens: after each chunk the text is checked
        for the `until` strings, and the next chunk continues from the carried state.
        """
        from lm_eval.models.utils import normalize_gen_kwargs

        results = []
        for request in tqdm(requests, desc="smt generate_until", disable=disable_tqdm):
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs or {}), DEFAULT_MAX_GEN_TOKS)
            ignored = sorted(set(kwargs) - _SAMPLING_KEYS)
            if ignored:
                logger.warning("smt generate_until: ignoring generation arguments %s", ignored)
            text = self._generate_one(context, kwargs)
            results.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return results

    def _generate_one(self, context: str, kwargs: dict) -> str:
        until = [s for s in kwargs["until"] if s]
        max_new = int(kwargs["max_gen_toks"])
        temperature = float(kwargs.get("temperature") or 0.0) if kwargs.get("do_sample") else 0.0
        top_k, top_p = kwargs.get("top_k"), kwargs.get("top_p")
        seed = kwargs.get("seed")
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self._device)
            generator.manual_seed(int(seed) if seed is not None else 1234)
        eos = self.eot_token_id
        # a one-token `until` string also stops generate itself; longer ones are found in the text
        stops = {eos} | {ids[0] for ids in map(self.tok_encode, until) if len(ids) == 1}
        prompt = self.tok_encode(context) or [eos]
        state, last = self._stream(prompt[:-1]), prompt[-1]
        new: list[int] = []
        while len(new) < max_new:
            n = min(GENERATE_CHUNK, max_new - len(new))
            head = torch.tensor([[last]], dtype=torch.long, device=self._device)
            out = self.model.generate(head, max_new_tokens=n, temperature=temperature, top_k=top_k, top_p=top_p,
                                      stop_token_ids=sorted(stops), generator=generator, state=state)
            chunk = out[0, 1:].tolist()
            new += chunk
            text, done = self._cut(new, until)
            if done or len(chunk) < n or chunk[-1] in stops:
                return text
            state, last = self._stream([last] + chunk[:-1], state), chunk[-1]
        return self._cut(new, until)[0]

    def _cut(self, ids: list[int], until: list[str]) -> tuple[str, bool]:
        """The text of `ids` up to the eos token and the first `until` string; whether one was found."""
        stopped = self.eot_token_id in ids
        if stopped:
            ids = ids[: ids.index(self.eot_token_id)]
        text = self.tok_decode(ids)
        cuts = [text.find(s) for s in until if s in text]
        if cuts:
            return text[: min(cuts)], True
        return text, stopped


def main(argv: list[str] | None = None) -> None:
    """lm_eval's command line with the "smt" model registered (this module is imported)."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
