"""Document sources: text, directories, .jsonl, WikiText, Hugging Face names, and bad data."""

from __future__ import annotations

import json

import datasets
import huggingface_hub.constants
import pytest

from smt.data.sources import (
    HFSource,
    count_words,
    iter_documents,
    read_text_file,
    resolve_source,
    split_wikitext_articles,
)


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_count_words():
    assert count_words("  a b\tc\n d \n") == 4
    assert count_words("  a b\tc\n d \n", count_line_ends=True) == 6
    assert count_words("") == 0


def test_count_words_in_chunks_matches_split(shared_data, monkeypatch):
    import smt.data.sources as sources

    text = (shared_data / "wikitext" / "wiki.valid.tokens").read_text(encoding="utf-8")[:50_000]
    for chunk in (1, 7, 1000):
        monkeypatch.setattr(sources, "_COUNT_CHUNK_CHARS", chunk)
        assert count_words(text) == len(text.split())
        assert count_words(" ab  cd\n") == 2


def test_wikitext_file_splits_into_articles(shared_data):
    path = shared_data / "wikitext" / "wiki.valid.tokens"
    source = resolve_source(path)
    records = list(source.records())
    articles = [text for text, _ in records]
    assert len(articles) == 60  # WikiText-2/103 validation: 60 articles
    assert "".join(articles) == path.read_text(encoding="utf-8")  # text kept as-is
    assert articles[1].startswith(" = Frank <unk> = \n")
    assert all(article.lstrip(" \n").startswith("= ") for article in articles)
    # The published WikiText validation size: words plus one <eos> per line.
    assert sum(words for _, words in records) == 217_646


def test_wikitext_sections_stay_inside_their_article():
    lines = [" \n", " = A = \n", " \n", " Text a . \n", " = = Part = = \n", " More . \n",
             " \n", " = B = \n", " b . \n"]
    articles = list(split_wikitext_articles(lines))
    assert articles == ["".join(lines[:7]), "".join(lines[7:])]


def test_text_file_is_one_document(tmp_path):
    text = "First line.\nSecond line.\n"
    assert list(iter_documents(write(tmp_path / "a.txt", text))) == [text]


def test_directory_of_books_is_sorted_one_doc_per_file(tmp_path):
    write(tmp_path / "b.txt", "book b")
    write(tmp_path / "a.txt", "book a")
    write(tmp_path / "sub" / "c.txt", "book c")
    write(tmp_path / "notes.csv", "ignored,file")
    write(tmp_path / ".hidden" / "d.txt", "ignored")
    assert list(iter_documents(tmp_path)) == ["book a", "book b", "book c"]


def test_directory_split_selection(shared_data, tmp_path):
    source = resolve_source(shared_data / "gutenberg", split="valid")
    assert [path.name for path, _ in source.files] == [
        "pg1661-the-adventures-of-sherlock-holmes.txt",
        "pg84-frankenstein.txt",
    ]
    write(tmp_path / "wiki.train.tokens", " = T = \n train . \n")
    write(tmp_path / "wiki.valid.tokens", " = V = \n valid . \n")
    assert list(iter_documents(tmp_path, split="validation")) == [" = V = \n valid . \n"]
    with pytest.raises(ValueError, match="no 'test' split"):
        resolve_source(tmp_path, split="test")
    with pytest.raises(ValueError, match="single file"):
        resolve_source(tmp_path / "wiki.train.tokens", split="train")


def test_jsonl_records(tmp_path):
    rows = [{"text": "one doc", "id": 1}, {"text": "  "}, {"text": "two doc"}]
    path = write(tmp_path / "data.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert list(iter_documents(path)) == ["one doc", "two doc"]
    other = write(tmp_path / "other.jsonl", json.dumps({"body": "x y"}) + "\n")
    assert list(iter_documents(other, text_field="body")) == ["x y"]
    with pytest.raises(ValueError, match=r"other.jsonl:1: no 'text' field \(found \['body'\]\)"):
        list(iter_documents(other))
    bad = write(tmp_path / "bad.jsonl", json.dumps({"text": "ok"}) + "\n{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        list(iter_documents(bad))


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        resolve_source(tmp_path / "nowhere.txt")
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        read_text_file(tmp_path / "nowhere.txt")


def test_empty_inputs(tmp_path):
    empty = write(tmp_path / "empty.txt", "")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        list(iter_documents(empty))
    blank = write(tmp_path / "blank.txt", " \n\n\t ")
    with pytest.raises(ValueError, match="blank.txt holds no text"):
        list(iter_documents(blank))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="holds no data files"):
        resolve_source(tmp_path / "nothing")
    with pytest.raises(ValueError, match="no data paths"):
        resolve_source([])


def test_empty_file_in_a_collection_is_skipped_with_a_warning(tmp_path):
    write(tmp_path / "books" / "a.txt", "")
    write(tmp_path / "books" / "b.txt", "real text")
    with pytest.warns(UserWarning, match="a.txt"):
        assert list(iter_documents(tmp_path / "books")) == ["real text"]


def test_non_utf8_names_file_and_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf" + b"\xe9 au lait")
    with pytest.raises(ValueError) as error:
        list(iter_documents(path))
    message = str(error.value)
    assert "latin.txt" in message and "offset 3" in message and "iconv" in message
    assert list(iter_documents(path, encoding="latin-1")) == ["café au lait"]


def test_non_utf8_offset_in_line_based_files(tmp_path):
    path = tmp_path / "wiki.train.tokens"
    path.write_bytes(b" = A = \n fine line \n bad \xff byte \n")
    with pytest.raises(ValueError, match="offset 25"):
        list(iter_documents(path))


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "model.txt"
    path.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(ValueError, match=r"model.txt looks binary: NUL byte at byte offset 4"):
        list(iter_documents(path))


def test_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert list(iter_documents(path)) == ["hello"]


def test_hub_names_resolve_and_fail_clearly_offline(monkeypatch):
    source = resolve_source("wikitext-103", split="valid")
    assert source == HFSource("Salesforce/wikitext", "wikitext-103-v1", "validation", "wikitext")
    assert resolve_source("pg19", split="test").repo == "emozilla/pg19"
    assert resolve_source("hf:someone/corpus:cfg").config == "cfg"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="could not load Hugging Face dataset 'Salesforce/wikitext'"):
        list(source.documents())


def _code_directory(root):
    write(root / "pkg" / "a.py", "def a():\n    return 1\n")
    write(root / "pkg" / "b.py", "import a\nprint(a.a())\n")
    write(root / "notes.md", "# notes\n")
    (root / "pkg" / "a.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00\x00\x00binary")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "old.py").write_bytes("caf\u00e9 = 1\n".encode("latin-1"))
    write(root / ".git" / "config", "[core]\n")  # hidden: never read
    return root


def test_a_directory_without_data_files_reads_its_text_files_and_names_what_it_skips(tmp_path):
    """Before, a directory of .py files `holds no data files`."""
    root = _code_directory(tmp_path / "code")
    with pytest.warns(UserWarning, match=r"skipping 3 of the 6 files in .*code that are binary or not utf-8 text: "
                                         r"logo.png \(binary: NUL byte at offset 8\); old.py \(not utf-8 text: byte "
                                         r"b'\\xe9' at offset 3\); pkg/a.cpython-311.pyc \(binary"):
        source = resolve_source(root)
    assert [path.name for path, _ in source.files] == ["notes.md", "a.py", "b.py"]
    assert list(source.documents())[1] == "def a():\n    return 1\n"


def test_extensions_choose_a_directory_s_files(tmp_path):
    root = _code_directory(tmp_path / "code")
    write(root / "readme.txt", "read me\n")
    assert [p.name for p, _ in resolve_source(root).files] == ["readme.txt"]  # data files first, as before
    with pytest.warns(UserWarning, match="old.py"):  # skipped: not utf-8
        chosen = resolve_source(root, extensions=".py, MD")
    assert [p.name for p, _ in chosen.files] == ["notes.md", "a.py", "b.py"]
    assert [p.name for p, _ in resolve_source(root, extensions=["md", ".txt"]).files] == ["notes.md", "readme.txt"]
    with pytest.raises(ValueError, match=r"holds no data files \(looked for files ending in \['.rs'\]; it holds "):
        resolve_source(root, extensions=".rs")


def test_a_directory_of_binary_files_is_refused_naming_them(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.so").write_bytes(b"\x7fELF\x00\x01")
    (tmp_path / "bin" / "y.dat").write_bytes(b"\xff\xfeh")
    with pytest.raises(ValueError, match=r"holds no usable text files: all 2 are binary or not utf-8 text: "
                                         r"x.so \(binary: NUL byte at offset 4\); y.dat \(not utf-8 text: byte "
                                         r"b'\\xff' at offset 0\).*--extensions.*--data_encoding"):
        resolve_source(tmp_path / "bin")
    assert list(iter_documents(tmp_path / "bin", encoding="latin-1", extensions=".dat")) == ["ÿþh"]


def test_extensions_are_normalised():
    from smt.data.sources import normalize_extensions

    assert normalize_extensions(".py,txt, .MD") == (".py", ".txt", ".md")
    assert normalize_extensions(["py"]) == (".py",) and normalize_extensions(None) is None
    with pytest.raises(ValueError, match="names no file ending"):
        normalize_extensions(" , ")
