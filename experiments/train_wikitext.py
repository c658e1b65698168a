"""Train SMT on WikiText-103 with the original flags (a thin wrapper over `smt train`).

    python experiments/train_wikitext.py --n_ssm_outputs 15 --m_input_tokens 50 --stride 16 \
        --batch_size 16 --epochs 10 [--train_data path/to/wikitext-103] [--tokenizer DIR]
    torchrun --nproc_per_node=8 experiments/train_wikitext.py --epochs 10
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_wrapper import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("wikitext103_smt.yaml", "Train SMT on WikiText-103 (configs/wikitext103_smt.yaml)."))
