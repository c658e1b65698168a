"""Write the run configs of the code comparison (docs/notebook/Q08-real-code.md) into configs/experiments/.

    python experiments/code_configs.py

Every run is configs/experiments/code_smt.yaml with the model replaced by its parameter-matched
baseline (`matched_baseline`: same width and vocabulary, depth / MLP width within a few percent
of the SMT's parameters); full attention reads a 1024-token context on random windows with the
same tokens per step. The files are committed; tests/test_experiment_configs.py checks they agree.
"""

from __future__ import annotations

import yaml
from gutenberg_configs import CONFIGS, matched_runs, write_configs  # the script beside this one

BASE = CONFIGS / "code_smt.yaml"


def run_configs() -> dict[str, dict]:
    return matched_runs(yaml.safe_load(BASE.read_text(encoding="utf-8")), "runs/code")


def main() -> None:
    write_configs(run_configs(), "code", "code_configs.py", "docs/notebook/Q08-real-code.md")


if __name__ == "__main__":
    main()
