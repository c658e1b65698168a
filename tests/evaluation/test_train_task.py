"""A small SMT trained briefly on an easy passkey beats chance; the same-window SWA cannot, because
the key lies beyond its reach (layers x (M - 1) tokens). Both go through smt.training's Trainer."""

from __future__ import annotations

import json

import torch

from smt import StrideHybridConfig, TrainingConfig
from smt.evaluation.tasks import TaskConfig, evaluate_task
from smt.evaluation.train_task import train_task
from smt.training.run_config import FullConfig, RunConfig

TASK = TaskConfig(name="passkey", seq_len=24, key_length=1, n_values=8, n_filler=4)


def train(arch: str, tmp_path):
    model = StrideHybridConfig.tiny(vocab_size=16, ssm_type="simple", arch=arch)
    training = TrainingConfig(batch_size=32, seq_len=24, lr=3e-3, warmup_steps=30, weight_decay=0.0,
                              max_steps=400, log_interval=100, checkpoint_interval=10**6, seed=1)
    run = RunConfig(output_dir=str(tmp_path / arch), progress=False, tensorboard=False)
    return train_task(FullConfig(model, training, run), TASK, eval_samples=16)


def test_smt_beats_chance_where_the_window_alone_cannot(tmp_path):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    smt, swa = train("smt", tmp_path), train("swa", tmp_path)
    far = [0.0, 0.25]  # the key sits 22 and 17 tokens back; a 2-layer window with M=8 reaches 14
    smt_far = evaluate_task(smt.model, TASK, n_samples=48, depths=far)
    swa_far = evaluate_task(swa.model, TASK, n_samples=48, depths=far)
    assert smt_far["exact"] >= 0.8, smt_far
    assert swa_far["exact"] <= TASK.chance + 0.15, swa_far
    near = evaluate_task(swa.model, TASK, n_samples=32, depths=[1.0])
    assert near["exact"] >= 0.8, near  # the baseline did learn the task where it can see the key
    saved = json.loads((tmp_path / "smt" / "task_eval.json").read_text())
    assert saved["arch"] == "smt" and saved["task_config"]["seq_len"] == 24
