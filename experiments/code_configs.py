"""Write the run configs of the code comparison (docs/MEMORY.md part 5) into configs/experiments/.

    python experiments/code_configs.py

Every run is configs/experiments/code_smt.yaml with the model replaced by its parameter-matched
baseline (`matched_baseline`: same width and vocabulary, depth / MLP width within a few percent
of the SMT's parameters); full attention reads a 1024-token context on random windows with the
same tokens per step. The files are committed; tests/test_experiment_configs.py checks they agree.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from gutenberg_configs import GPT_CONTEXT, model_fields  # the script beside this one

from smt import StrideHybridConfig
from smt.models.baselines import matched_baseline

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
BASE = CONFIGS / "code_smt.yaml"


def run_configs() -> dict[str, dict]:
    base = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    smt = StrideHybridConfig.from_dict(base["model"])
    runs = {}
    for arch in ("swa", "gpt", "mamba"):
        matched = matched_baseline(smt, arch)
        training = dict(base["training"])
        if arch == "gpt":
            matched = matched.replace(context_length=GPT_CONTEXT)
            tokens_per_step = training["batch_size"] * training["seq_len"]
            training.update(seq_len=GPT_CONTEXT, batch_size=tokens_per_step // GPT_CONTEXT, batching="random")
        runs[arch] = {"model": model_fields(matched, base["model"]), "training": training,
                      "run": {**base["run"], "output_dir": f"runs/code/{arch}"}}
    return runs


def main() -> None:
    for name, config in run_configs().items():
        path = CONFIGS / f"code_{name}.yaml"
        header = (f"# Written by experiments/code_configs.py from code_smt.yaml: the '{name}' run of\n"
                  "# docs/MEMORY.md part 5. Edit code_smt.yaml or the script, not this file.\n")
        path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        print(path)


if __name__ == "__main__":
    main()
