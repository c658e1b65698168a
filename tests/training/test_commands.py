import json
import subprocess
import sys

import pytest

from smt.cli import main
from tests.conftest import REPO


def _book_run_args(tmp_path, shared_data, steps=6, extra=()):
    text = (shared_data / "gutenberg/train/pg158-emma.txt").read_text(encoding="utf-8")
    (tmp_path / "train.txt").write_text(text[:40_000], encoding="utf-8")
    return ["train", "--preset", "tiny", "--vocab_size", "512", "--train_data", str(tmp_path / "train.txt"),
            "--valid_fraction", "null", "--tokenizer", str(tmp_path / "tok"), "--tokenizer_vocab_size", "512",
            "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "run"),
            "--batch_size", "4", "--seq_len", "32", "--max_steps", str(steps), "--checkpoint_interval", "3",
            "--progress", "false", "--tensorboard", "false", *extra]


def test_train_then_generate(tmp_path, shared_data, capsys):
    assert main(_book_run_args(tmp_path, shared_data)) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])
    assert summary["steps"] == 6 and summary["last_checkpoint"].endswith("step_000006")
    assert (tmp_path / "run" / "checkpoints" / "step_000006" / "model.safetensors").is_file()
    assert main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "Emma was",
                 "--max_new_tokens", "8", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "step_000006" in out and "Emma was" in out
    # resuming a finished run with more steps continues from its last checkpoint
    assert main(_book_run_args(tmp_path, shared_data, steps=8, extra=("--resume",))) == 0
    assert (tmp_path / "run" / "checkpoints" / "step_000008").is_dir()


def test_generate_without_tokenizer_names_the_file(tmp_path, shared_data, capsys):
    assert main(_book_run_args(tmp_path, shared_data, steps=3)) == 0
    (tmp_path / "run" / "checkpoints" / "step_000003" / "tokenizer.json").unlink()
    assert main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "x"]) == 2
    assert "step_000003/tokenizer.json is missing" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(capsys):
    assert main(["train", "--lr", "-1"]) == 2
    assert "lr=-1" in capsys.readouterr().err


def test_print_config_and_help(capsys):
    assert main(["train", "--config", str(REPO / "configs/cpu_gutenberg_smt.yaml"), "--print-config",
                 "--max_steps", "5"]) == 0
    assert "max_steps: 5" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--config" in capsys.readouterr().out


def test_experiment_wrapper_maps_the_original_flags():
    command = [sys.executable, str(REPO / "experiments/train_wikitext.py"), "--n_ssm_outputs", "3",
               "--m_input_tokens", "9", "--stride", "5", "--batch_size", "2", "--epochs", "2",
               "--print-config"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout
    for line in ("n_ssm_outputs: 3", "m_input_tokens: 9", "stride: 5", "batch_size: 2", "epochs: 2.0",
                 "max_steps: null"):
        assert line in out
