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
    # before the error: warnings, notes, and the trainer's start line and time estimate
    assert all(line.startswith(("warning:", "note:", "training:", "timing:")) for line in err.splitlines()[:-1]), err
    return last


def _train_args(tmp_path: Path, shared_data: Path, output_dir: Path, *extra: str, steps: int = 2) -> list[str]:
    train = tmp_path / "train.txt"
    if not train.exists():
        text = (shared_data / "gutenberg/train/pg158-emma.txt").read_text(encoding="utf-8")
        train.write_text(text[:40_000], encoding="utf-8")
    return ["train", "--preset", "tiny", "--vocab_size", "512", "--train_data", str(train), "--valid_fraction", "null",
            "--tokenizer", str(tmp_path / "tok"), "--tokenizer_vocab_size", "512", "--output_dir", str(output_dir),
            "--batch_size", "4", "--seq_len", "32", "--max_steps", str(steps), "--warmup_steps", "1",
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


def _remount_read_only(disk: Path) -> None:
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)


def test_read_only_directories_are_named_with_the_option_to_change(tmp_path, shared_data, capsys, mount_tmpfs):
    """A fresh run, a resume and `smt eval --out` on a read-only file system (before: a raw
    `OSError: [Errno 30] Read-only file system` traceback)."""
    read_only = mount_tmpfs("1m", read_only=True)
    line = _one_line(capsys, _train_args(tmp_path, shared_data, read_only / "run"))
    assert f"cannot use {read_only / 'run'}: the file system is read-only" in line and "--output_dir" in line, line
    disk = mount_tmpfs("8m")
    assert main(_train_args(tmp_path, shared_data, disk / "run")) == 0
    capsys.readouterr()
    _remount_read_only(disk)
    line = _one_line(capsys, _train_args(tmp_path, shared_data, disk / "run", "--resume", steps=4))
    assert f"cannot use {disk / 'run'}" in line and "read-only" in line, line
    line = _one_line(capsys, ["eval", "--checkpoint", str(disk / "run"), "--data", str(tmp_path / "train.txt"),
                              "--max-documents", "1", "--out", str(read_only / "eval")])
    assert f"cannot use {read_only / 'eval'}: the file system is read-only" in line and "another --out" in line, line


def test_a_file_where_a_directory_belongs_is_named(tmp_path, shared_data, capsys):
    """`--output_dir FILE/sub` (before: NotADirectoryError) and `--cache_dir FILE` (FileExistsError)."""
    (tmp_path / "a_file").write_text("mine")
    line = _one_line(capsys, _train_args(tmp_path, shared_data, tmp_path / "a_file" / "sub"))
    assert f"cannot use {tmp_path / 'a_file' / 'sub'}: a part of this path is a file" in line, line
    line = _one_line(capsys, _train_args(tmp_path, shared_data, tmp_path / "run", "--cache_dir",
                                         str(tmp_path / "a_file")))
    assert f"cannot use {tmp_path / 'a_file'}: a file is in the way where a directory is expected" in line, line
    assert (tmp_path / "a_file").read_text() == "mine"


def test_an_unknown_device_suggests_cuda_or_cpu(tmp_path, capsys):
    """Before: torch's `RuntimeError: Expected one of cpu, cuda, ipu, xpu, ...` (train), and for
    generate a message blaming the model directory's config.json."""
    line = _one_line(capsys, ["train", "--training.device", "gpu", "--print-config"])
    assert "device='gpu': unknown training device; use cpu, cuda" in line, line
    line = _one_line(capsys, ["generate", "--checkpoint", str(tmp_path), "--prompt", "x", "--device", "gpu"])
    assert "--device gpu: unknown device; use cpu, cuda, cuda:N, mps or auto" in line, line


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from smt import StrideHybridConfig, StrideHybridModel

    words = ["<unk>", "the", "memory", "stride", "<|endoftext|>"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    directory = tmp_path_factory.mktemp("model") / "m"
    StrideHybridModel(StrideHybridConfig.tiny(vocab_size=8)).save_pretrained(directory, tokenizer=tokenizer)
    return directory


def test_a_lone_surrogate_in_the_prompt_is_named(model_dir, capsys):
    """Bytes that are not UTF-8 in argv reach Python as lone surrogates; before: the tokenizer's
    `TextInputSequence must be str`."""
    line = _one_line(capsys, ["generate", "--checkpoint", str(model_dir), "--prompt", "the \udc80 memory"])
    assert "--prompt: character 4 ('\\udc80') is a lone surrogate" in line and "UTF-8" in line, line


def test_a_latin1_config_json_is_named(model_dir, tmp_path, capsys):
    """Before: `'utf-8' codec can't decode byte 0xe9 in position ...`, no file named."""
    import json
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    (copy / "checksums.json").unlink()
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    (copy / "config.json").write_text(json.dumps({**config, "note": "café"}, ensure_ascii=False), encoding="latin-1")
    line = _one_line(capsys, ["generate", "--checkpoint", str(copy), "--prompt", "the memory"])
    assert f"{copy / 'config.json'}: not UTF-8 text" in line and "latin-1" in line, line


def test_lm_eval_model_args_that_are_not_numbers_are_named():
    """`lm_eval --model smt --model_args segment_len=abc`: before, `invalid literal for int()`."""
    pytest.importorskip("lm_eval")
    from smt.evaluation.lm_eval_adapter import SMTLM

    for name, value in (("segment_len", "abc"), ("segment_len", "0"), ("segment_len", "2.5")):
        with pytest.raises(ValueError, match=rf"{name}='{value}' in --model_args: must be a whole number >= 1"):
            SMTLM(pretrained="unused", **{name: value})


@pytest.mark.parametrize("option,value,part,field", [
    ("--vocab_size", "1e12", "64,000,000,176,065 parameters", "model.vocab_size"),
    ("--batch_size", "1e9", "activations", "training.batch_size"),
])
def test_impossible_sizes_are_refused_with_the_memory_they_need(tmp_path, shared_data, capsys, option, value, part,
                                                                 field):
    """Before: a raw `DefaultCPUAllocator: can't allocate memory` traceback (vocab_size), or a run
    that ground on until killed (batch_size). Refused before the run directory is created."""
    args = _train_args(tmp_path, shared_data, tmp_path / "run")
    args[args.index(option) + 1] = value
    line = _one_line(capsys, args)
    assert "this run needs at least " in line and f"({part}" in line and "but the cpu memory is" in line, line
    assert f"lower {field}" in line, line
    assert not (tmp_path / "run").exists()


def test_a_state_too_large_for_the_memory_is_refused_or_warned(monkeypatch, capsys):
    """--m_input_tokens 1000000: a 5 GB carried state at batch 4, which grew silently before."""
    import torch

    from smt import StrideHybridConfig
    from smt.config import TrainingConfig
    from smt.training import memory_estimate

    model, training = StrideHybridConfig.tiny(m_input_tokens=1_000_000), TrainingConfig(batch_size=4, seq_len=32)
    monkeypatch.setattr(memory_estimate, "device_memory", lambda device: (4 << 30, 2 << 30))
    with pytest.raises(ValueError, match=r"needs at least 4\.8 GiB \(the carried stream state: 4\.8 GiB\) but the "
                                         r"cpu memory is 4\.0 GiB; lower model\.m_input_tokens"):
        memory_estimate.check_training_memory(model, training, torch.device("cpu"))
    monkeypatch.setattr(memory_estimate, "device_memory", lambda device: (64 << 30, 5 << 30))
    warning = memory_estimate.check_training_memory(model, training, torch.device("cpu"))
    assert warning.startswith("warning: this run needs at least 4.8 GiB") and "5.0 GiB of cpu memory is free" in warning
    monkeypatch.setattr(memory_estimate, "device_memory", lambda device: (64 << 30, 60 << 30))
    assert memory_estimate.check_training_memory(model, training, torch.device("cpu")) is None


@pytest.mark.parametrize("option,value,named", [
    ("--ssm_dt_max", "1e300", "dt_proj.bias, ssm.layers.1.mixer.dt_proj.bias are non-finite at initialisation"),
    ("--initializer_range", "1e30", "model.initializer_range=1e+30 (default 0.02)"),
])
def test_a_nonfinite_first_step_blames_the_setting_not_the_learning_rate(tmp_path, shared_data, capsys, option,
                                                                         value, named):
    """Before: 'non-finite loss at step 1 ... Lower the learning rate', which no update had used yet."""
    line = _one_line(capsys, _train_args(tmp_path, shared_data, tmp_path / "run", option, value))
    assert "non-finite loss at step 1" in line and "before any update, so not the learning rate" in line, line
    assert named in line and f"model.{option[2:]}={float(value)!r}" in line, line
    assert "Lower the learning rate" not in line, line


def test_damaged_records_in_a_run_directory_are_named(tmp_path, shared_data, capsys):
    """A metrics.jsonl line that is JSON but not a record (before: `'<=' not supported between
    instances of 'str' and 'int'`) and a damaged trainer state in training.json (before: `string
    indices must be integers`); the history is not rewritten when the resume is refused."""
    import json

    run = tmp_path / "run"
    assert main(_train_args(tmp_path, shared_data, run)) == 0
    capsys.readouterr()
    history = (run / "metrics.jsonl").read_text(encoding="utf-8")
    (run / "metrics.jsonl").write_text(history + '{"step": "x"}\n', encoding="utf-8")
    line = _one_line(capsys, _train_args(tmp_path, shared_data, run, "--resume", steps=4))
    assert f"{run / 'metrics.jsonl'} line 2 is not a metrics record" in line and "delete that line" in line, line
    (run / "metrics.jsonl").write_text(history, encoding="utf-8")
    record_file = run / "checkpoints" / "step_000002" / "training.json"
    record = json.loads(record_file.read_text(encoding="utf-8"))
    record_file.write_text(json.dumps({**record, "trainer": {**record["trainer"], "window": "junk"}}), encoding="utf-8")
    line = _one_line(capsys, _train_args(tmp_path, shared_data, run, "--resume", steps=4))
    assert f"{record_file}: the trainer state is damaged" in line and "move step_000002 away" in line, line
    assert (run / "metrics.jsonl").read_text(encoding="utf-8") == history
