"""Train SMT on PG-19 books in streaming mode with the original flags (a wrapper over `smt train`).

    python experiments/train_pg19.py --n_ssm_outputs 20 --m_input_tokens 80 --stride 25 \
        --batch_size 8 --epochs 1 [--train_data path/to/pg19] [--tokenizer DIR]
    torchrun --nproc_per_node=8 experiments/train_pg19.py --epochs 1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_wrapper import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("pg19_smt.yaml", "Train SMT on PG-19 books, streamed (configs/pg19_smt.yaml)."))
