"""The error boundary's generating test (issue 39, section 5): hypothesis draws bad invocations of
every kind section 5 lists (read-only and full file systems, a file where a directory belongs,
unknown devices and encodings, lone surrogates, config.json in other encodings, impossible sizes)
with random names and values; each must end in exit 2 and one line naming the path or field,
never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smt.cli import main

NAMES = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
NOT_DEVICES = NAMES.filter(lambda name: name not in ("cpu", "cuda", "mps", "auto"))
NOT_ENCODINGS = NAMES.map(lambda name: "x" + name + "-enc")
SURROGATES = st.integers(0xDC80, 0xDCFF).map(chr)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, mount_tmpfs_module) -> dict[str, Path]:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from smt import StrideHybridConfig, StrideHybridModel

    root = tmp_path_factory.mktemp("boundary")
    words = ["<unk>", "the", "memory", "stride", "<|endoftext|>"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    StrideHybridModel(StrideHybridConfig.tiny(vocab_size=8)).save_pretrained(root / "model", tokenizer=tokenizer)
    (root / "text.txt").write_text("the memory stride " * 40, encoding="utf-8")
    (root / "a_file").write_text("mine", encoding="utf-8")
    return {"root": root, "model": root / "model", "text": root / "text.txt", "file": root / "a_file",
            "read_only": mount_tmpfs_module("1m", read_only=True)}


@pytest.fixture(scope="module")
def mount_tmpfs_module(tmp_path_factory):
    """A module-scoped tmpfs mount (the function-scoped one is in conftest)."""
    import subprocess

    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        target = tmp_path_factory.mktemp("fs")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs",
                               str(target)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); this test needs root, as in CI")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _argv(case: str, value: str, fx: dict[str, Path]) -> tuple[list[str], str]:
    """(an invocation, the text its one line must contain)."""
    model, text = str(fx["model"]), str(fx["text"])
    if case == "device":
        return ["generate", "--checkpoint", model, "--prompt", "the", "--device", value], f"--device {value}"
    if case == "training_device":
        # the command line reads values as YAML ("null", "true", "1" are no strings): the field is what is named
        return ["train", "--training.device", value, "--print-config"], "training.device="
    if case == "encoding":
        return ["analyze", "--checkpoint", model, "--text", text, "--encoding", value], value
    if case == "surrogate":
        return ["generate", "--checkpoint", model, "--prompt", f"the {value} memory"], "--prompt"
    if case == "read_only_out":
        out = fx["read_only"] / value
        return ["eval", "--checkpoint", model, "--data", text, "--out", str(out)], f"cannot use {out}"
    if case == "file_in_the_way":
        out = fx["file"] / value
        return ["eval", "--checkpoint", model, "--data", text, "--out", str(out)], f"cannot use {out}"
    if case == "vocab_size":
        return ["train", "--preset", "tiny", "--vocab_size", value, "--train_data", text, "--tokenizer_vocab_size",
                "300", "--tokenizer", str(fx["root"] / "tok"), "--cache_dir", str(fx["root"] / "cache"),
                "--valid_fraction", "null", "--output_dir", str(fx["root"] / "never"), "--progress", "false"], \
            "lower model.vocab_size"
    raise AssertionError(case)


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


CASES = st.one_of(
    st.tuples(st.just("device"), NOT_DEVICES),
    st.tuples(st.just("training_device"), NOT_DEVICES),
    st.tuples(st.just("encoding"), NOT_ENCODINGS),
    st.tuples(st.just("surrogate"), SURROGATES),
    st.tuples(st.just("read_only_out"), NAMES),
    st.tuples(st.just("file_in_the_way"), NAMES),
    st.tuples(st.just("vocab_size"), st.integers(10**13, 10**15).map(str)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=CASES)
def test_bad_invocations_end_in_one_line_naming_the_problem(fixtures, case):
    argv, named = _argv(*case, fixtures)
    code, err = _run(argv)
    lines = [line for line in err.splitlines()
             if not line.startswith(("warning:", "note:", "model.vocab_size:", "training:", "timing:"))]
    assert code == 2 and "Traceback" not in err, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith(f"smt {argv[0]}: error: ") and named in lines[0], (argv, err)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoding=st.sampled_from(["latin-1", "cp1252", "utf-16", "cp437"]),
       word=st.sampled_from(["café", "naïve", "Ångström"]))
def test_a_config_json_in_another_encoding_is_named(fixtures, encoding, word):
    copy = fixtures["root"] / f"copy-{encoding}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(fixtures["model"], copy)
    (copy / "checksums.json").unlink()
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    (copy / "config.json").write_text(json.dumps({**config, "note": word}, ensure_ascii=False), encoding=encoding)
    code, err = _run(["generate", "--checkpoint", str(copy), "--prompt", "the"])
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"{copy / 'config.json'}: not UTF-8 text" in err, err
