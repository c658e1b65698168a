"""experiments/memory_recall.py trains through smt.training.train_task (no loop of its own) and
writes the result line that experiments/robust_report.py and memory_report.py read."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import experiment_script


def test_a_short_run_writes_the_result_line_the_reports_read(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    recall = experiment_script("memory_recall")
    monkeypatch.setattr(recall, "LOG_EVERY", 2)
    out, run_dir = tmp_path / "results.jsonl", tmp_path / "run"
    common = ["--seq-len", "16", "--batch-size", "4", "--warmup", "1", "--eval-samples", "4", "--out", str(out)]
    assert recall.main(["--steps", "4", "--model", "write_gate=false", "--save", str(tmp_path / "stage1"),
                        "--run-dir", str(run_dir), *common]) == 0
    assert (run_dir / "task_eval.json").is_file() and (run_dir / "metrics.jsonl").is_file()
    # a curriculum stage: the write gates are new, torch's AdamW defaults, states passed on from filler rows
    assert recall.main(["--steps", "4", "--init-from", str(tmp_path / "stage1"), "--optimizer", "torch-adamw",
                        "--state-passing", "0.5", "--label", "stage2", *common]) == 0
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert [step for step, _ in first["losses"]] == [2, 4]
    assert [d["step"] for d in first["diagnostics"]] == [2, 4] and first["diagnostics"][0]["gate_mean"] is None
    assert second["diagnostics"][-1]["gate_mean"] is not None and second["optimizer"] == "torch-adamw"
    assert set(first["accuracy"]) == {"16"} and first["R"] == 14 and first["train_seconds"] >= 0
    from smt.models import load_model

    assert load_model(tmp_path / "stage1").config.write_gate is False
    capsys.readouterr()
    table = experiment_script("robust_report").summarize([first, second])
    smt_row, stage_row = table.splitlines()[-2:]  # per seed: losses at 100 / 500 / 1000 / last, gradient, gates
    assert smt_row.startswith("| smt | 1 | - / - / - / ") and smt_row.endswith(" | - |")
    assert stage_row.startswith("| stage2 | 1 | - / - / - / ") and not stage_row.endswith(" | - |")
    assert "| stage2 | 1 |" in experiment_script("memory_report").tables([first, second])
    with pytest.raises(ValueError, match="does not (match|fit)"):  # a stage may add the gates, nothing else
        recall.main(["--steps", "2", "--init-from", str(tmp_path / "stage1"), "--arch", "gpt", *common])
