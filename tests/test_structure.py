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


def _smt_imports(path) -> set[str]:
    """The smt modules a source file imports, at the top or inside functions."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smt"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("smt"))
    return names


def test_the_layers_import_downwards_only():
    """errors <- atomic_files, config <- model_directory <- models <- pretrained / training / evaluation: the
    model format needs no model, and the models need neither the pretrained mappings nor the trainer (the
    old models <-> pretrained cycle is gone). smt.errors, the CLI's error boundary, names the trainer's
    NonFiniteError only inside the function that classifies an error, so it stays at the bottom."""
    package = REPO / "src" / "smt"
    assert _smt_imports(package / "atomic_files.py") <= {"smt.errors"}
    errors_module = (package / "errors.py").read_text()
    assert not [line for line in errors_module.splitlines() if line.startswith(("from smt", "import smt"))]
    assert _smt_imports(package / "model_directory.py") <= {"smt.config", "smt.data.tokenizer", "smt.atomic_files",
                                                          "smt.distribution"}
    assert not _smt_imports(package / "distribution.py")  # the distribution's name: imports nothing of smt
    for path in (package / "models").rglob("*.py"):
        higher = {m for m in _smt_imports(path) if m.startswith(("smt.pretrained", "smt.training", "smt.evaluation",
                                                                 "smt.commands"))}
        assert not higher, f"{path.relative_to(package)} imports {sorted(higher)}"
