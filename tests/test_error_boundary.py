"""The command line's one error boundary (issue 39, section 5): every command ends in one line
naming the file or field and the fix; an unexpected exception prints one line plus where its
traceback was written, or the traceback with SMT_DEBUG=1. Each case below escaped as a raw
traceback (or a misleading message) before."""

from __future__ import annotations

from pathlib import Path

import pytest

from smt.cli import main


def _one_line(capsys, argv: list[str], code: int = 2) -> str:
    got = main(argv)
    err = capsys.readouterr().err
    assert got == code, err
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"smt {argv[0]}: error: "), err
    assert all(line.startswith("warning:") or line.startswith("note:") for line in err.splitlines()[:-1]), err
    return last


def _train_args(tmp_path: Path, shared_data: Path, output_dir: Path, *extra: str) -> list[str]:
    train = tmp_path / "train.txt"
    if not train.exists():
        text = (shared_data / "gutenberg/train/pg158-emma.txt").read_text(encoding="utf-8")
        train.write_text(text[:40_000], encoding="utf-8")
    return ["train", "--preset", "tiny", "--vocab_size", "512", "--train_data", str(train), "--valid_fraction", "null",
            "--tokenizer", str(tmp_path / "tok"), "--tokenizer_vocab_size", "512", "--output_dir", str(output_dir),
            "--batch_size", "4", "--seq_len", "32", "--max_steps", "2", "--warmup_steps", "1",
            "--checkpoint_interval", "2", "--progress", "false", "--tensorboard", "false", *extra]


def test_an_unexpected_error_is_one_line_and_its_traceback_is_kept(capsys, monkeypatch):
    import smt.commands.info as info

    def broken(args):
        raise RuntimeError("something nobody anticipated\nsecond line")

    monkeypatch.delenv("SMT_DEBUG", raising=False)
    monkeypatch.setattr(info, "run", broken)
    line = _one_line(capsys, ["info", "x"], code=1)
    assert "unexpected RuntimeError: something nobody anticipated;" in line and "SMT_DEBUG=1" in line, line
    kept = Path(line.split("the full traceback is in ")[1].split(" (or set")[0])
    try:
        assert "Traceback" in kept.read_text() and "second line" in kept.read_text()
    finally:
        kept.unlink()
    monkeypatch.setenv("SMT_DEBUG", "1")
    assert main(["info", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err, err


def test_a_real_full_disk_is_named_with_its_free_space(tmp_path, shared_data, capsys, mount_tmpfs):
    """2 MiB: the run starts, its first checkpoint (2.6 MB) does not fit. Before: torch's
    `[enforce fail at inline_container.cc:672] . unexpected pos ...` traceback."""
    disk = mount_tmpfs("2m")
    line = _one_line(capsys, _train_args(tmp_path, shared_data, disk / "run"))
    assert f"disk full at {disk / 'run' / 'checkpoints'}: free " in line and "choose another --output_dir" in line
    assert list((disk / "run" / "checkpoints").iterdir()) == []  # no staging folder left
    assert (disk / "run" / "config.yaml").stat().st_size > 0


def test_a_disk_full_before_config_yaml_leaves_no_empty_config(tmp_path, shared_data, capsys, mount_tmpfs):
    """Before, the lock's flush raised a bare `OSError: [Errno 28]` and config.yaml could be left empty."""
    disk = mount_tmpfs("1m")
    with open(disk / "filler", "wb", buffering=0) as out, pytest.raises(OSError):
        while True:
            out.write(bytes(4096))
    line = _one_line(capsys, _train_args(tmp_path, shared_data, disk / "run"))
    assert f"disk full at {disk / 'run'}" in line and "free 0 bytes" in line, line
    assert not (disk / "run" / "config.yaml").exists()
    (disk / "filler").unlink()
    with open(disk / "filler", "wb") as out:  # room for the lock and marker, not for config.yaml
        out.write(bytes((1 << 20) - 8192))
    line = _one_line(capsys, _train_args(tmp_path, shared_data, disk / "run"))
    assert f"disk full at {disk / 'run' / 'config.yaml'}: free " in line, line
    assert not (disk / "run" / "config.yaml").exists()
