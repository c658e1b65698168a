"""Write the run configs of the text regime (issue 37, docs/TEXT.md) into configs/experiments/.

    python experiments/text_configs.py

Every run is configs/experiments/text_smt.yaml (the default SMT) with the model replaced by its
parameter-matched baseline (`matched_baseline`), full attention on random 1024-token windows with
the same tokens per step. tests/test_experiment_configs.py checks the files still agree.
"""

from __future__ import annotations

import yaml
from gutenberg_configs import CONFIGS, matched_runs, variant_runs, write_configs  # the script beside this one

BASE = CONFIGS / "text_smt.yaml"

# memory variants tried in the regime (docs/TEXT.md): name -> changes to the SMT's model section
VARIANTS = {
    # every token reads the memory's state with its own query (what MQAR needed), two tokens per write
    "smt_s2read": {"stride": 2, "memory_read": "slots+state"},
    # every token enters the memory's SSM and reads its output; a slot every 8 tokens (memory: token_rate)
    "smt_tokenrate": {"memory": "token_rate"},
    # token_rate with more of the parameters in the recurrence: one attention layer traded for two
    # Mamba layers (Mamba alone, 9 layers, leads everywhere; docs/TEXT.md)
    "smt_tokenrate_m4": {"memory": "token_rate", "transformer_n_layers": 3, "ssm_n_layers": 4},
}


def run_configs() -> dict[str, dict]:
    base = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    return {**matched_runs(base, "runs/text"), **variant_runs(base, VARIANTS, "runs/text")}


def main() -> None:
    write_configs(run_configs(), "text", "text_configs.py", "docs/TEXT.md (issue 37)")


if __name__ == "__main__":
    main()
