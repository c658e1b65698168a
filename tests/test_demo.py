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


def _dev_only_modules() -> list[str]:
    """The import names of the dev extra's packages that are not runtime dependencies."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name = lambda spec: re.split(r"[<>=;\[ ]", spec, maxsplit=1)[0].strip().lower().replace("-", "_")  # noqa: E731
    runtime = {name(spec) for spec in project["dependencies"]}
    dev = [name(spec) for spec in project["optional-dependencies"]["dev"]]
    return sorted({module for module in dev if module not in runtime} | {"_pytest"})


# runs the demo with the dev-only packages absent: importing one fails, find_spec says it is not there
_WITHOUT_DEV = """
import importlib.abc, importlib.util, runpy, sys
blocked = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (dev-only: the demo must not need it)", name=name)
sys.meta_path.insert(0, Absent())
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in blocked else real_find_spec(name, package))
for module in list(sys.modules):
    if module.split(".")[0] in blocked:
        del sys.modules[module]
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_the_demo_needs_no_dev_package_and_says_what_each_stage_does(tmp_path):
    """`make demo` installs the runtime only: the demo must run without the dev extra. Before, it
    was silent for minutes per stage."""
    import os
    import subprocess
    import sys

    blocked = _dev_only_modules()
    assert {"pytest", "hypothesis", "lm_eval", "triton"} <= set(blocked)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _WITHOUT_DEV, ",".join(blocked), str(ROOT / "scripts" / "demo.py"),
                           "--steps", "5", "--long-steps", "1", "--seq-len", "32", "--long-seq-len", "48",
                           "--far-seq-len", "64", "--seed-design-steps", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = [line for line in done.stdout.splitlines() if line.startswith("==> stage")]
    assert [line.split(":")[0] for line in stages] == [f"==> stage {i}/5" for i in range(1, 6)], done.stdout
    assert "training SMT for 5 steps at 32 tokens" in stages[0] and "scoring every model" in stages[3]
    assert "train: 100%" in done.stderr and "scoring: 100%" in done.stderr  # the progress bars
    assert "timing: " in done.stderr and "training: " in done.stderr


def test_make_demo_installs_the_runtime_only_and_make_test_the_dev_extra(tmp_path):
    """Before, `make demo` installed the whole dev extra (lm_eval, triton, ...: a 2.9 GB venv)."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def recipe(target: str) -> list[str]:
        done = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
                              capture_output=True, text=True, check=True)
        return [line for line in done.stdout.splitlines() if "pip install" in line or "demo.py" in line
                or "pytest" in line]

    demo = recipe("demo")
    assert not any("[dev]" in line for line in demo), demo
    torch_line = next(i for i, line in enumerate(demo) if "torch==2.13.0" in line)
    project_line = next(i for i, line in enumerate(demo) if line.endswith("pip install -q -e ."))
    assert torch_line < project_line < len(demo) - 1 and demo[-1].endswith("scripts/demo.py ")
    test = recipe("test")
    assert any(line.endswith("pip install -q -e '.[dev]'") for line in test) and "pytest" in test[-1]
