"""From a RunConfig to a tokenizer and token views: train/valid data, checked against the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smt.config import StrideHybridConfig
from smt.training.batching import TokenView, as_view
from smt.training.run_config import RunConfig


def source_options(run: RunConfig) -> dict:
    """How to read the run's data files (smt.data.sources options)."""
    return {"encoding": run.data_encoding, "text_field": run.text_field, "extensions": run.extensions}


def prepare_tokenizer(run: RunConfig, progress: bool = False):
    """Load run.tokenizer; when that path does not exist and run.tokenizer_vocab_size is set,
    train a byte-level BPE on run.train_data and save it there first (later runs reuse it)."""
    from smt.data import load_tokenizer, train_bpe_tokenizer

    if run.tokenizer is None:
        raise ValueError("run.tokenizer is not set: give a tokenizer path (tokenizer.json or a "
                         "directory), or a directory plus run.tokenizer_vocab_size to train one")
    path = Path(run.tokenizer).expanduser()
    if not path.exists() and run.tokenizer_vocab_size is not None:
        if run.train_data is None:
            raise ValueError("training a tokenizer needs run.train_data")
        sources = run.train_data if isinstance(run.train_data, list) else [run.train_data]
        if run.train_split is not None:
            from smt.data import resolve_source

            sources = [str(p) for p, _ in resolve_source(run.train_data, run.train_split, **source_options(run)).files]
        return train_bpe_tokenizer(sources, run.tokenizer_vocab_size, save_dir=path, progress=progress,
                                   **source_options(run))
    return load_tokenizer(run.tokenizer)


def split_by_position(dataset, valid_fraction: float) -> tuple[TokenView, TokenView]:
    """(train, valid) of a source with one document: its last ceil(valid_fraction * tokens) tokens
    validate, the ones before train (word counts are then unknown: no word-level perplexity)."""
    import math

    n = len(dataset.tokens)
    n_valid = min(n - 2, max(2, math.ceil(valid_fraction * n)))
    if n < 4 or n_valid < 2:
        raise ValueError(f"the training data holds {n} tokens, too few to split into training and validation; "
                         "use more text or a separate validation source (--valid_data)")
    cut = n - n_valid
    view = as_view(dataset)
    return (TokenView(view.tokens[:cut], np.array([0, cut], dtype=np.int64), view.eos_id, view.vocab_size),
            TokenView(view.tokens[cut:], np.array([0, n_valid], dtype=np.int64), view.eos_id, view.vocab_size))


def prepare_data(run: RunConfig, tokenizer, progress: bool = True,
                 report: bool = True) -> tuple[TokenView, TokenView | None]:
    """(train, valid or None) token views: cached token datasets, split and cut as configured; with
    run.valid_fraction a source of one document (a single file) is split by position, said on stderr
    when `report`."""
    from smt.data import build_token_dataset, split_documents

    if run.train_data is None:
        raise ValueError("run.train_data is not set: pass a file, a directory of .txt files, or a "
                         "dataset name (wikitext-103, pg19)")
    train = build_token_dataset(run.train_data, tokenizer, cache_dir=run.cache_dir,
                                split=run.train_split, progress=progress, **source_options(run))
    valid = None
    if run.valid_data is not None:
        valid = build_token_dataset(run.valid_data, tokenizer, cache_dir=run.cache_dir,
                                    split=run.valid_split, progress=progress, **source_options(run))
    elif run.valid_fraction is not None and train.n_documents < 2:
        n = len(train)
        train, valid = split_by_position(train, run.valid_fraction)
        if report:
            import sys

            print(f"note: {run.train_data} is a single document: validating on its last {len(valid):,} tokens "
                  f"({len(valid) / n:.0%}, run.valid_fraction={run.valid_fraction}) and training on the "
                  f"{len(train):,} before them; no word-level perplexity for this split. For a separate "
                  "validation set pass --valid_data", file=sys.stderr)
    elif run.valid_fraction is not None:
        train, valid = split_documents(train, run.valid_fraction)
    train_view = as_view(train, run.max_train_tokens, name=f"train data {run.train_data}")
    valid_view = None if valid is None else as_view(valid, run.max_valid_tokens,
                                                    name=f"validation data {run.valid_data}")
    return train_view, valid_view


def check_vocab(view: TokenView, model_config: StrideHybridConfig, what: str = "the data") -> None:
    """The tokenizer/data vocabulary must fit the model's embedding."""
    if view.vocab_size > model_config.vocab_size:
        from smt.config import pad_vocab_size

        raise ValueError(f"{what} uses a tokenizer with {view.vocab_size} tokens but model.vocab_size is "
                         f"{model_config.vocab_size}: token ids would fall outside the embedding; set "
                         f"model.vocab_size to {pad_vocab_size(view.vocab_size)} or use the tokenizer "
                         "the model was built for")


def fit_vocab_to_tokenizer(config, tokenizer, report: bool = True) -> None:
    """Size the model's vocabulary from the tokenizer (padded to a multiple of 8) when the config does not
    give model.vocab_size; when it does, refuse one too small and warn of one larger (embedding rows no
    token ever trains); `report` says what it did (rank 0 only)."""
    import sys

    from smt.config import pad_vocab_size

    wanted = getattr(tokenizer, "model_vocab_size", None) or pad_vocab_size(tokenizer.vocab_size)
    have = config.model.vocab_size
    if have == wanted:
        return
    if not config.vocab_size_given:
        config.model = config.model.replace(vocab_size=wanted)
        if report:
            print(f"model.vocab_size: {wanted}, from the tokenizer ({tokenizer.vocab_size} tokens, padded to a "
                  f"multiple of 8; the preset has {have})", file=sys.stderr)
        return
    if tokenizer.vocab_size > have:
        raise ValueError(f"tokenizer {config.run.tokenizer} has {tokenizer.vocab_size} tokens but model.vocab_size is "
                         f"{have}: token ids would fall outside the embedding; set --model.vocab_size {wanted} "
                         "(or leave it out to take the tokenizer's)")
    if have > wanted and report:
        print(f"warning: model.vocab_size={have} but the tokenizer has {tokenizer.vocab_size} tokens: "
              f"{have - wanted:,} embedding rows will never be trained; set --model.vocab_size {wanted} (or leave "
              "it out of the config to take the tokenizer's)", file=sys.stderr)
