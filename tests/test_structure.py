from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_verify_structure_passes():
    result = subprocess.run([sys.executable, str(REPO / "scripts/verify_structure.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "layout ok" in result.stdout and "package modules" in result.stdout


def test_public_names_import_from_smt():
    import smt

    for name in ("StrideHybridConfig", "StrideHybridModel", "TrainingConfig", "AttentionPoolingAnalyzer",
                 "SimpleSSM", "SimpleCausalTransformer"):
        assert hasattr(smt, name)


def test_requirements_txt_matches_pyproject():
    """The seed's install step (pip install -r requirements.txt) installs what pyproject.toml declares."""
    import tomllib

    root = REPO
    declared = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    lines = [line.strip() for line in (root / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    listed = [line for line in lines if line and not line.startswith("#")]
    assert listed[-1] == "-e ."
    assert sorted(listed[:-1]) == sorted(declared)
