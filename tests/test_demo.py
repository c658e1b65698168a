"""`make demo` end to end on a few steps: both models train, both lengths are scored, files appear."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("smt_demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(["--steps", "4", "--long-steps", "2", "--seq-len", "32", "--long-seq-len", "48",
                      "--far-seq-len", "64", "--seed-design-steps", "3", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "demo_results.json").read_text())
    assert results["R"] == 14 and set(results["accuracy"]) == {"32", "48", "64"}
    for by_model in results["accuracy"].values():
        assert set(by_model) == {"SMT", "SMT, seed's design", "SWA (same window, no memory)"}
        assert all(0.0 <= v <= 1.0 for accuracy in by_model.values() for v in accuracy.values())
    assert (tmp_path / "passkey_by_distance.png").stat().st_size > 0
    assert (tmp_path / "pooling_attention.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "beyond every window" in printed and "answer :" in printed
