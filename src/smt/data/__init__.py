"""The data pipeline: tokenizers, document sources, and memory-mapped token caches."""

from smt.data.cache import (
    CacheCorruptError,
    TokenDataset,
    build_token_dataset,
    default_cache_dir,
    split_documents,
)
from smt.data.sources import (
    HF_DATASETS,
    HFSource,
    LocalSource,
    count_words,
    iter_documents,
    read_text_file,
    resolve_source,
    split_wikitext_articles,
)
from smt.data.tokenizer import (
    EOS_TOKEN,
    SMTTokenizer,
    check_vocab_compatible,
    load_tokenizer,
    train_bpe_tokenizer,
    truncate_vocab,
)

__all__ = [
    "EOS_TOKEN",
    "HF_DATASETS",
    "CacheCorruptError",
    "HFSource",
    "LocalSource",
    "SMTTokenizer",
    "TokenDataset",
    "build_token_dataset",
    "check_vocab_compatible",
    "count_words",
    "default_cache_dir",
    "iter_documents",
    "load_tokenizer",
    "read_text_file",
    "resolve_source",
    "split_documents",
    "split_wikitext_articles",
    "train_bpe_tokenizer",
    "truncate_vocab",
]
