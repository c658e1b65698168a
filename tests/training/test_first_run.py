"""What a first run tells its user (issue 40, part 2): the model and step size at the start, an
estimate of the run's time after a few steps, progress through the final full evaluation, a
CPU-sized model when no config is given on a CPU, and the user's own text accepted as it comes."""

from __future__ import annotations

import re

from smt.training.trainer import Trainer
from tests.conftest import REPO
from tests.training.helpers import synthetic_view, tiny_config

VIEW = synthetic_view()


def test_the_start_names_the_model_device_dtype_and_tokens_per_step(tmp_path, capsys):
    Trainer(tiny_config(tmp_path, max_steps=2, batch_size=4, seq_len=32, gradient_accumulation_steps=2),
            VIEW).train()
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("training:"))
    parameters = int(re.search(r"training: ([\d,]+) parameters", line).group(1).replace(",", ""))
    from smt.models import build_model

    assert parameters == build_model(tiny_config(tmp_path).model).count_parameters()["total"]
    assert "device cpu" in line and "float32" in line
    assert "256 tokens per step (batch 4 x seq_len 32 x accumulation 2 x 1 process)" in line
    assert "2 steps" in line


def test_an_estimate_of_the_time_per_step_and_to_the_end_follows_the_first_steps(tmp_path, capsys):
    Trainer(tiny_config(tmp_path, max_steps=9, checkpoint_interval=100), VIEW).train()
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("timing:"))
    assert re.search(r"timing: [\d.]+ s per step \(steps 2-4\); 5 steps to go, about \d", line), line
    Trainer(tiny_config(tmp_path / "short", max_steps=3), VIEW).train()  # too short to estimate
    assert "timing:" not in capsys.readouterr().err


def test_the_final_full_evaluation_shows_its_progress(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=2, eval_interval=100)
    config.run.progress = True
    Trainer(config, VIEW, VIEW).train()
    err = capsys.readouterr().err
    assert re.search(r"final evaluation \(whole validation set\): +\d+%\|.*\| \d+/13 ", err)  # 13 batches


def test_no_config_on_a_cpu_trains_a_cpu_sized_preset_and_says_how_to_get_the_big_one(capsys):
    from smt.cli import main

    assert main(["train", "--print-config", "--train_data", "books", "--max_steps", "50"]) == 0
    captured = capsys.readouterr()
    assert "d_model: 64\n" in captured.out and "max_steps: 50\n" in captured.out
    note = [line for line in captured.err.splitlines() if "CPU-sized" in line]
    assert len(note) == 1 and "`tiny` preset" in note[0] and "--preset wikitext103" in note[0]
    for argv in (["--preset", "wikitext103"], ["--d_model", "512"], ["--training.device", "cuda"]):
        assert main(["train", "--print-config", *argv]) == 0  # asked for a model or a GPU: as asked
        captured = capsys.readouterr()
        assert "CPU-sized" not in captured.err and "d_model: 64\n" not in captured.out, argv


def _own_text_args(tmp_path, data, *extra):
    return ["train", "--preset", "tiny", "--train_data", str(data), "--tokenizer", str(tmp_path / "tok"),
            "--tokenizer_vocab_size", "300", "--cache_dir", str(tmp_path / "cache"), "--output_dir",
            str(tmp_path / "run"), "--batch_size", "2", "--seq_len", "32", "--max_steps", "2", "--warmup_steps", "1",
            "--progress", "false", *extra]


def _valid_rows(run_dir):
    import json

    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "valid"]


def test_a_single_text_file_is_split_by_position_with_a_note(tmp_path, shared_data, capsys):
    """Before: `cannot split 1 document by whole documents`."""
    from smt.cli import main

    text = (shared_data / "gutenberg/train/pg158-emma.txt").read_text(encoding="utf-8")[:20_000]
    (tmp_path / "book.txt").write_text(text, encoding="utf-8")
    assert main(_own_text_args(tmp_path, tmp_path / "book.txt", "--valid_fraction", "0.1")) == 0
    err = capsys.readouterr().err
    note = next(line for line in err.splitlines() if "is a single document" in line)
    assert re.search(r"validating on its last [\d,]+ tokens \(10%, run.valid_fraction=0.1\) and training on the "
                     r"[\d,]+ before them", note) and "--valid_data" in note
    rows = _valid_rows(tmp_path / "run")
    assert rows and rows[-1]["complete"] and "word_ppl" not in rows[-1]


def test_a_directory_of_code_trains_skipping_what_is_not_text(tmp_path, shared_data, capsys):
    """Before: `directory ... holds no data files`."""
    from smt.cli import main

    source = (REPO / "src" / "smt" / "training")
    code = tmp_path / "code"
    code.mkdir()
    for path in sorted(source.glob("*.py"))[:6]:
        (code / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (code / "blob.bin").write_bytes(b"\x00\x01\x02")
    (code / "notes.rst").write_text("not code\n", encoding="utf-8")
    assert main(_own_text_args(tmp_path, code, "--extensions", ".py,.bin", "--valid_fraction", "0.2")) == 0
    captured = capsys.readouterr()
    assert "skipping 1 of the 7 files" in captured.err and "blob.bin (binary: NUL byte at offset 0)" in captured.err
    assert _valid_rows(tmp_path / "run")
    import json

    assert json.loads(captured.out[captured.out.index("{\n"):])["steps"] == 2
