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
