"""Reading documents from data sources: text files, directories of books, .jsonl, WikiText, and
Hugging Face datasets by name.

A source resolves to a `LocalSource` (a sorted list of files, each with a format) or an
`HFSource`. Both yield `str` documents, give an `identity()` for cache keys, and count words for
word-level perplexity. Bad data fails early with the file, the byte offset and the fix.
"""

from __future__ import annotations

import codecs
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("auto", "text", "wikitext", "jsonl")
# Short names -> (Hugging Face repo, config, format). WikiText rows are lines of the original files.
# PG-19's official repo (deepmind/pg19) is a loading script, which current `datasets` refuses;
# emozilla/pg19 holds the same splits as parquet. Any other repo: "hf:owner/name[:config]".
HF_DATASETS = {
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-v1", "wikitext"),
    "wikitext-103-raw": ("Salesforce/wikitext", "wikitext-103-raw-v1", "wikitext"),
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-v1", "wikitext"),
    "wikitext-2-raw": ("Salesforce/wikitext", "wikitext-2-raw-v1", "wikitext"),
    "pg19": ("emozilla/pg19", None, "text"),
}
SPLIT_ALIASES = {
    "train": ("train",),
    "valid": ("valid", "validation", "val", "dev"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
_HF_SPLIT = {"valid": "validation", "val": "validation", "dev": "validation"}
_DIRECTORY_SUFFIXES = (".txt", ".jsonl", ".tokens", ".raw")
# A top-level WikiText heading (" = Title = "); sections are " = = Section = = ".
_WIKITEXT_TITLE = re.compile(r"^\s*= (?!=).*(?<!=) =\s*$")
_WHITESPACE = re.compile(r"\s")
_COUNT_CHUNK_CHARS = 1 << 20
_SNIFF_BYTES = 1 << 16  # a directory's files are judged text or not from their first 64 KiB
_ENCODING_HINT = (
    "convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`) or pass its encoding "
    "(encoding='latin-1'; on the command line `smt train --data_encoding latin-1`, `smt eval` / "
    "`smt analyze --encoding latin-1`)"
)


def count_words(text: str, count_line_ends: bool = False) -> int:
    """Whitespace-separated words, plus one per line end when `count_line_ends`.

    WikiText's published token counts (e.g. 217,646 for the validation split) are exactly the
    words plus one <eos> per line, so WikiText sources count line ends and others do not.
    Counted chunk by chunk (cut at whitespace) so a huge document is never split into one list.
    """
    words, start = 0, 0
    while start < len(text):
        end = start + _COUNT_CHUNK_CHARS
        if end < len(text):
            next_space = _WHITESPACE.search(text, end)
            end = next_space.start() if next_space else len(text)
        words += len(text[start:end].split())
        start = end + 1
    return words + text.count("\n") if count_line_ends else words


def _decode_error(path: Path, offset: int, error: UnicodeDecodeError, encoding: str) -> ValueError:
    bad = error.object[error.start : error.start + 4]
    return ValueError(
        f"{path} is not valid {encoding} text: undecodable byte(s) {bad!r} at byte offset {offset}; "
        + _ENCODING_HINT
    )


def _check_not_binary(path: Path, data: bytes, base_offset: int, encoding: str) -> None:
    if not encoding.lower().replace("_", "-").startswith("utf-8"):
        return
    nul = data.find(b"\x00")
    if nul != -1:
        raise ValueError(
            f"{path} looks binary: NUL byte at byte offset {base_offset + nul}. Pass a text file; "
            f"if it is UTF-16 text, " + _ENCODING_HINT.replace("latin1", "utf-16")
        )


def _decode(path: Path, data: bytes, base_offset: int, encoding: str) -> str:
    _check_not_binary(path, data, base_offset, encoding)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise _decode_error(path, base_offset + error.start, error, encoding) from error
    return text[1:] if base_offset == 0 and text.startswith("\ufeff") else text


def _require_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"data file {path} is empty (0 bytes); remove it or pass a non-empty file")


def read_text_file(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole file as text, with clear errors for missing, empty, binary or undecodable files."""
    path = Path(path)
    _require_file(path)
    return _decode(path, path.read_bytes(), 0, encoding)


def iter_text_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """The file's lines (newline kept), decoded one at a time so memory stays bounded by the
    longest line; errors name the byte offset."""
    path = Path(path)
    _require_file(path)
    offset = 0
    with open(path, "rb") as handle:
        for raw in handle:
            yield _decode(path, raw, offset, encoding)
            offset += len(raw)


def split_wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """Group WikiText lines into articles, each starting at a top-level ` = Title = ` heading.
    The text is kept as-is; blank lines before the first heading join the first article."""
    current: list[str] = []
    has_text = False
    for line in lines:
        if has_text and _WIKITEXT_TITLE.match(line):
            yield "".join(current)
            current, has_text = [], False
        current.append(line)
        has_text = has_text or bool(line.strip())
    if has_text:
        yield "".join(current)


def _iter_jsonl(path: Path, encoding: str, text_field: str) -> Iterator[str]:
    for line_number, line in enumerate(iter_text_lines(path, encoding), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict) or text_field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"{path}:{line_number}: no {text_field!r} field (found {keys}); "
                f"choose the field with text_field=... (`smt train --text_field NAME`)"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise ValueError(
                f"{path}:{line_number}: field {text_field!r} holds {type(text).__name__}, not text"
            )
        yield text


def detect_format(path: Path) -> str:
    """'jsonl' for .jsonl, 'wikitext' for WikiText files (.tokens/.raw), else 'text'."""
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix in (".tokens", ".raw"):
        return "wikitext"
    return "text"


@dataclass(frozen=True)
class LocalSource:
    """Local files read in order; a 'text' file is one document, WikiText files are split into
    articles and .jsonl files give one document per record."""

    files: tuple[tuple[Path, str], ...]
    text_field: str = "text"
    encoding: str = "utf-8"

    def identity(self) -> dict:
        described = []
        for path, file_format in self.files:
            stat = path.stat()
            described.append([str(path.resolve()), file_format, stat.st_size, stat.st_mtime_ns])
        return {
            "kind": "local",
            "files": described,
            "text_field": self.text_field,
            "encoding": self.encoding,
        }

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path, _ in self.files)

    def _file_records(self, path: Path, file_format: str) -> Iterator[tuple[str, int]]:
        if file_format == "wikitext":
            for article in split_wikitext_articles(iter_text_lines(path, self.encoding)):
                yield article, count_words(article, count_line_ends=True)
        elif file_format == "jsonl":
            for text in _iter_jsonl(path, self.encoding, self.text_field):
                if text.strip():
                    yield text, count_words(text)
        else:
            text = read_text_file(path, self.encoding)
            if text.strip():
                yield text, count_words(text)

    def records(self) -> Iterator[tuple[str, int]]:
        """(document, word count) pairs; empty files in a collection are skipped with a warning."""
        n_documents = 0
        for path, file_format in self.files:
            n_before = n_documents
            if len(self.files) > 1 and path.stat().st_size == 0:
                warnings.warn(f"skipping empty data file {path}", stacklevel=2)
                continue
            for record in self._file_records(path, file_format):
                n_documents += 1
                yield record
            if n_documents == n_before:
                if len(self.files) == 1:
                    raise ValueError(f"data file {path} holds no text (only whitespace)")
                warnings.warn(f"data file {path} holds no text; skipped", stacklevel=2)
        if n_documents == 0:
            raise ValueError(f"no documents found in {[str(p) for p, _ in self.files]}")

    def documents(self) -> Iterator[str]:
        for text, _ in self.records():
            yield text


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset split (downloaded and cached by `datasets`)."""

    repo: str
    config: str | None
    split: str
    file_format: str = "text"
    text_field: str = "text"

    def _load(self):
        try:
            import datasets
        except ImportError as error:
            raise ImportError("reading Hugging Face datasets needs `pip install datasets`") from error
        try:
            return datasets.load_dataset(self.repo, self.config, split=self.split)
        except Exception as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise FileNotFoundError(
                f"could not load Hugging Face dataset {self.repo!r} (config {self.config!r}, split "
                f"{self.split!r}) from the Hub or the local datasets cache (offline?). Download it "
                f"once where the Hub is reachable, or pass local files in the same format. "
                f"Cause: {first_line}"
            ) from error

    def identity(self) -> dict:
        dataset = self._load()
        return {
            "kind": "huggingface",
            "repo": self.repo,
            "config": self.config,
            "split": self.split,
            "fingerprint": getattr(dataset, "_fingerprint", None),
            "rows": len(dataset),
        }

    @property
    def total_bytes(self) -> int | None:
        return None

    def records(self) -> Iterator[tuple[str, int]]:
        dataset = self._load()
        if self.text_field not in dataset.column_names:
            raise ValueError(
                f"dataset {self.repo!r} has no {self.text_field!r} column (columns: "
                f"{dataset.column_names}); choose one with text_field=..."
            )
        rows = (row[self.text_field] for row in dataset)
        if self.file_format == "wikitext":
            for article in split_wikitext_articles(rows):
                yield article, count_words(article, count_line_ends=True)
            return
        n_documents = 0
        for text in rows:
            if text and text.strip():
                n_documents += 1
                yield text, count_words(text)
        if n_documents == 0:
            raise ValueError(f"dataset {self.repo!r} split {self.split!r} holds no documents")

    def documents(self) -> Iterator[str]:
        for text, _ in self.records():
            yield text


Source = LocalSource | HFSource
SourceLike = str | Path | Sequence[str | Path] | LocalSource | HFSource


def card_name(source: str | Path) -> str:
    """How a model card names a data source: the hub repo of a dataset name ("wikitext-103" ->
    "Salesforce/wikitext", "hf:owner/name:config" -> "owner/name"), else the last part of a local
    path (a card names the data, not the directories of the machine it was read from)."""
    text = str(source)
    if text in HF_DATASETS:
        return HF_DATASETS[text][0]
    if text.startswith("hf:"):
        return text[len("hf:"):].partition(":")[0]
    return Path(text).name or text


def _hf_source(name: str, split: str | None, text_field: str) -> HFSource:
    hf_split = _HF_SPLIT.get(split or "train", split or "train")
    if name in HF_DATASETS:
        repo, config, file_format = HF_DATASETS[name]
        return HFSource(repo, config, hf_split, file_format, text_field)
    repo, _, config = name[len("hf:") :].partition(":")
    return HFSource(repo, config or None, hf_split, "text", text_field)


def _split_candidates(directory: Path, split: str) -> list[Path]:
    aliases = SPLIT_ALIASES.get(split, (split,))
    for alias in aliases:
        if (directory / alias).is_dir():
            return [directory / alias]
    matches = []
    for path in sorted(directory.iterdir()):
        parts = path.name.split(".")
        if path.is_file() and any(alias in parts[:-1] for alias in aliases):
            matches.append(path)
    if not matches:
        found = sorted(p.name for p in directory.iterdir())[:10]
        raise ValueError(
            f"no {split!r} split in {directory}: expected a subdirectory named one of {aliases} or "
            f"files like wiki.{aliases[0]}.tokens / {aliases[0]}.jsonl (found: {found}); "
            f"pass split=None to read the whole directory"
        )
    return matches


def normalize_extensions(extensions: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """".py,.txt" / ["py", ".TXT"] -> (".py", ".txt"); None stays None (a directory's default files)."""
    if extensions is None:
        return None
    items = extensions.split(",") if isinstance(extensions, str) else list(extensions)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"extensions must be text like '.py,.txt', got {extensions!r}")
    names = tuple(dict.fromkeys("." + item.strip().lstrip(".").lower() for item in items if item.strip(" .")))
    if not names:
        raise ValueError(f"extensions {extensions!r} names no file ending; write e.g. '.py,.txt'")
    return names


def _not_text(path: Path, encoding: str) -> str | None:
    """Why the file is not text in `encoding`, judged from its first _SNIFF_BYTES (None: it reads)."""
    with open(path, "rb") as handle:
        data = handle.read(_SNIFF_BYTES)
    nul = data.find(b"\x00")
    if encoding.lower().replace("_", "-").startswith("utf-8") and nul != -1:
        return f"binary: NUL byte at offset {nul}"
    try:
        codecs.getincrementaldecoder(encoding)("strict").decode(data, final=len(data) < _SNIFF_BYTES)
    except UnicodeDecodeError as error:
        return f"not {encoding} text: byte {data[error.start:error.start + 1]!r} at offset {error.start}"
    return None


def _directory_files(directory: Path, extensions: tuple[str, ...] | None = None,
                     encoding: str = "utf-8") -> list[Path]:
    """The data files of a directory (hidden ones left out): those ending in `extensions`; without
    them its .txt/.jsonl/.tokens/.raw files, or, when it holds none, every file. Files that are not
    text (binary, or not in `encoding`) are skipped with a warning naming them."""
    candidates = [
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    ]
    if extensions is not None:
        files = [path for path in candidates if path.suffix.lower() in extensions]
        looked_for = f"files ending in {list(extensions)}"
    else:
        files = [path for path in candidates if path.suffix in _DIRECTORY_SUFFIXES] or candidates
        looked_for = f"{list(_DIRECTORY_SUFFIXES)} files, or any text files"
    if not files:
        others = sorted({path.suffix or path.name for path in candidates})[:8]
        raise ValueError(
            f"directory {directory} holds no data files (looked for {looked_for}"
            + (f"; it holds {others}: choose them with --extensions, e.g. --extensions {','.join(others[:2])}"
               if others and extensions is not None else "")
            + ")"
        )
    skipped = {}
    for path in files:
        if path.stat().st_size:
            why = _not_text(path, encoding)
            if why is not None:
                skipped[path] = why
    if skipped:
        named = "; ".join(f"{path.relative_to(directory)} ({why})" for path, why in list(skipped.items())[:10])
        more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        if len(skipped) == len(files):
            raise ValueError(
                f"directory {directory} holds no usable text files: all {len(files)} are binary or not "
                f"{encoding} text: {named}{more}. Choose the text files with --extensions (e.g. --extensions "
                f".py,.txt), or for text in another encoding " + _ENCODING_HINT
            )
        warnings.warn(
            f"skipping {len(skipped)} of the {len(files)} files in {directory} that are binary or not {encoding} "
            f"text: {named}{more}", stacklevel=3
        )
    return [path for path in files if path not in skipped]


def _local_files(path: Path, split: str | None, extensions: tuple[str, ...] | None = None,
                 encoding: str = "utf-8") -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(
            f"data path not found: {path} (it is not a dataset name either; known names: "
            f"{sorted(HF_DATASETS)} or hf:owner/name)"
        )
    if path.is_file():
        if split is not None:
            raise ValueError(
                f"split={split!r} was given for the single file {path}; a split selects part of a "
                f"directory or Hugging Face dataset. Pass the file for that split with split=None"
            )
        return [path]
    chosen = _split_candidates(path, split) if split is not None else [path]
    files: list[Path] = []
    for item in chosen:
        files.extend(_directory_files(item, extensions, encoding) if item.is_dir() else [item])
    return files


def resolve_source(
    source: SourceLike,
    split: str | None = None,
    text_field: str = "text",
    encoding: str = "utf-8",
    file_format: str = "auto",
    extensions: str | Sequence[str] | None = None,
) -> Source:
    """Turn a path, a list of paths, or a dataset name ("wikitext-103", "wikitext-2", "pg19",
    "hf:owner/name[:config]") into a source. Local paths win over names. A directory reads the
    files ending in `extensions` (e.g. ".py,.txt"); without them its .txt/.jsonl/.tokens/.raw
    files, or every file when it has none of those; binary or undecodable files are skipped with
    a warning."""
    if isinstance(source, (LocalSource, HFSource)):
        return source
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {FORMATS}, got {file_format!r}")
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        name = str(source)
        if not path.exists() and (name in HF_DATASETS or name.startswith("hf:")):
            return _hf_source(name, split, text_field)
        paths = [path]
    else:
        paths = [Path(item).expanduser() for item in source]
        if not paths:
            raise ValueError("no data paths given")
    extensions = normalize_extensions(extensions)
    files = [file for path in paths for file in _local_files(path, split, extensions, encoding)]
    formats = [detect_format(f) if file_format == "auto" else file_format for f in files]
    return LocalSource(tuple(zip(files, formats)), text_field, encoding)


def iter_documents(source: SourceLike, split: str | None = None, **options) -> Iterator[str]:
    """The documents of `source` as strings (options: text_field, encoding, file_format, extensions)."""
    yield from resolve_source(source, split, **options).documents()
