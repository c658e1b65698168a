"""The seed quick start (../shared/seed/SMT_QUICKSTART.ko.md) runs as written.

Every Python block is run in order in one namespace, as a reader pasting them into one session
would, with only the import lines mapped (`config.model_config` and `src.models.*` -> `smt`, and
TrainingConfig, which one block uses without importing, imported up front);
the `python -c` lines of its bash blocks run the same way. The one block left out is the
schematic loop under "Stride-based Write": it calls helpers the document never defines
(get_window, add_to_window), so it is pseudo-code; the behaviour it sketches is what the
invariant tests prove (tests/models/test_invariants.py). The seed's own commands
(scripts/verify_structure.py, tests/test_integration.py) run as subprocesses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO

SHARED = Path(os.environ.get("SMT_DATA_DIR", REPO.parent / "shared" / "data")).parent
SEED = SHARED / "seed" / "SMT_QUICKSTART.ko.md"
SCHEMATIC = "window = get_window()"
IMPORTS = [
    (r"from config\.model_config import", "from smt import"),
    (r"from src\.models\.stride_hybrid import", "from smt import"),
    (r"from src\.models\.components\.[a-z_]+ import", "from smt import"),
]


def _blocks(language: str) -> list[str]:
    text = SEED.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _mapped(code: str) -> str:
    for pattern, replacement in IMPORTS:
        code = re.sub(pattern, replacement, code)
    return code


@pytest.mark.slow
def test_every_python_block_of_the_seed_runs(tmp_path, monkeypatch, capsys):
    if not SEED.is_file():
        pytest.fail(f"the seed quick start is missing: {SEED} (../shared must sit beside the repository)")
    blocks = _blocks("python")
    assert len(blocks) == 9 and sum(SCHEMATIC in b for b in blocks) == 1
    monkeypatch.chdir(tmp_path)  # the analyzer block writes attention_pattern.png here
    namespace: dict = {"__name__": "seed_quickstart"}
    exec("from smt import TrainingConfig", namespace)  # used by the seed's last config block, never imported there
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # device='cuda' on a machine without one: built on the CPU
        for block in blocks:
            if SCHEMATIC not in block:
                exec(compile(_mapped(block), "SMT_QUICKSTART.ko.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "Output shape: torch.Size([2, 100, 50280])" in out
    assert "SSM writes: 6/100" in out
    assert "Generated shape: torch.Size([1, 60])" in out
    assert re.search(r"SSM attention: +\d+\.\d\d%", out) and "Entropy:" in out
    assert re.search(r"transformer +: +\d+\.\dM", out)
    assert (tmp_path / "attention_pattern.png").stat().st_size > 1000
    assert namespace["training_config"].gradient_accumulation_steps == 8
    assert namespace["config"].n_ssm_outputs == 15  # `StrideHybridConfig(...)`: the defaults


@pytest.mark.slow
def test_the_seeds_shell_lines_run():
    lines = [line for block in _blocks("bash") for line in re.sub(r"\\\n\s*", "", block).splitlines()]
    snippets = [re.search(r'python -c "(.*)"', line).group(1) for line in lines if line.startswith("python -c")
                and "load_dataset" not in line]  # the data download needs the network
    assert snippets, "no python -c line found in the seed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for snippet in snippets:
        result = subprocess.run([sys.executable, "-c", _mapped(snippet)], capture_output=True, text=True,
                                env=env, cwd=REPO, timeout=120)
        assert result.returncode == 0, result.stderr
    assert "Using SimpleSSM fallback" in result.stdout
    for command in (["scripts/verify_structure.py"], ["tests/test_integration.py"]):
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, cwd=REPO,
                                timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "✅" in result.stdout
