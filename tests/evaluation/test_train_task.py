"""A tiny SMT learns to recall a key hidden in *random* filler beyond the window's reach
R = layers x (M - 1); the same-window SWA provably cannot see that far. Through smt.training's Trainer."""

from __future__ import annotations

import json

import torch

from smt import StrideHybridConfig, TrainingConfig
from smt.evaluation.passkey import synthetic_passkey
from smt.evaluation.tasks import TaskConfig, evaluate_task
from smt.evaluation.train_task import train_task
from smt.models.baselines import build_model
from smt.training.run_config import FullConfig, RunConfig

TASK = TaskConfig(name="passkey", seq_len=32, key_length=1, n_values=8, n_filler=8, filler="random")
FAR = [0.0, 0.25]  # the key sits 29 and 22 tokens before the question; R = 2 x (8 - 1) = 14


def tiny(arch: str) -> StrideHybridConfig:
    return StrideHybridConfig.tiny(vocab_size=TASK.vocab_size, arch=arch)


def test_smt_recalls_beyond_the_window_with_random_filler(tmp_path):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = tiny("smt")
    assert TASK.seq_len - 3 - round(0.25 * (TASK.seq_len - 3)) > config.window_reach  # both depths lie beyond R
    training = TrainingConfig(batch_size=32, seq_len=TASK.seq_len, lr=3e-3, warmup_steps=30, weight_decay=0.0,
                              max_steps=400, log_interval=100, checkpoint_interval=10**6, seed=1)
    run = RunConfig(output_dir=str(tmp_path / "smt"), progress=False, tensorboard=False)
    result = train_task(FullConfig(config, training, run), TASK, eval_samples=16)
    far = evaluate_task(result.model, TASK, n_samples=48, depths=FAR)
    assert far["exact"] >= 0.9, far
    saved = json.loads((tmp_path / "smt" / "task_eval.json").read_text())
    assert saved["arch"] == "smt" and saved["task_config"]["filler"] == "random"


def test_the_same_window_without_memory_cannot_see_beyond_its_reach():
    """SWA's prediction at the question is the same whatever key sits beyond R: it is at chance there."""
    torch.manual_seed(0)
    swa = build_model(tiny("swa")).eval()
    generator = torch.Generator().manual_seed(3)
    prompt = synthetic_passkey(TASK.seq_len, 0.0, generator, 1, TASK.n_values, TASK.n_filler, filler="random")
    assert len(prompt.input_ids) - 1 - prompt.key_start > swa.config.window_reach
    other = prompt.input_ids.clone()
    other[prompt.key_start] = prompt.answer[0] + 1 if prompt.answer[0] + 1 < 2 + TASK.n_values else 2
    with torch.no_grad():
        a, _ = swa(prompt.input_ids[None])
        b, _ = swa(other[None])
    torch.testing.assert_close(a[0, -1], b[0, -1], rtol=0, atol=0)
    smt = build_model(tiny("smt")).eval()
    with torch.no_grad():
        a, _ = smt(prompt.input_ids[None])
        b, _ = smt(other[None])
    assert not torch.equal(a[0, -1], b[0, -1])  # the memory does carry the far key to the question
