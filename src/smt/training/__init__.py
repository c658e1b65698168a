"""Training: batching, optimiser, schedule, checkpoints, distributed, the Trainer."""

from smt.training.checkpoint import CheckpointError
from smt.training.run_config import FullConfig, RunConfig, load_run_config
from smt.training.trainer import NonFiniteError, Trainer, TrainResult

__all__ = ["CheckpointError", "FullConfig", "NonFiniteError", "RunConfig", "TrainResult", "Trainer",
           "load_run_config"]
