"""experiments/gpu_text.sh's chain (probe, train the four models, evaluate with the recall split, tables) at toy
size on CPU, so that the GPU run it prepares has run end to end before its first device minute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_text_chain_runs_at_toy_size(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' tokenizer path is relative: built here, not in the repo
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import gpu_text
    finally:
        sys.path.remove(str(REPO / "experiments"))
    results = tmp_path / "text" / "gpu.jsonl"
    assert gpu_text.main(["--toy", "--data", str(shared_data), "--runs", str(tmp_path / "runs"),
                          "--results", str(results)]) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["model"] for r in records) == ["gpt", "mamba", "smt", "swa"]
    assert len({r["tokens_seen"] for r in records}) == 1  # the same tokens for every model
    assert all(r["recall_split"]["edges"] == [32, 186, 512] for r in records)
    assert (tmp_path / "text" / "gpu_loss_by_position.png").is_file()
    assert (tmp_path / "text" / "gpu_recall_split.png").is_file()
    assert not (tmp_path / "runs" / "probe").exists()


def test_gpu_text_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "experiments" / "gpu_text.sh")], check=True)
