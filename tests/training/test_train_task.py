"""Task training (smt.training.train_task): a tiny SMT learns to recall a key hidden in *random* filler
beyond the window's reach R = layers x (M - 1), which the same-window SWA provably cannot see, through
smt.training's Trainer; the task batcher is seeded, scores only the answers and passes states on."""

from __future__ import annotations

import json

import pytest
import torch

from smt import StrideHybridConfig, TrainingConfig
from smt.evaluation.passkey import QUERY_MARK, synthetic_passkey
from smt.evaluation.tasks import TaskConfig, evaluate_task
from smt.models.baselines import build_model
from smt.training.run_config import FullConfig, RunConfig
from smt.training.train_task import TaskBatcher, train_task

TASK = TaskConfig(name="passkey", seq_len=32, key_length=1, n_values=8, n_filler=8, filler="random")
FAR = [0.0, 0.25]  # the key sits 29 and 22 tokens before the question; R = 2 x (8 - 1) = 14


def tiny(arch: str) -> StrideHybridConfig:
    return StrideHybridConfig.tiny(vocab_size=TASK.vocab_size, arch=arch)


@pytest.mark.slow
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


def test_state_passing_is_a_probability():
    for bad in (-0.1, 1.0, True, "half"):
        try:
            TaskConfig(name="passkey", state_passing=bad)
        except ValueError as error:
            assert "state_passing" in str(error)
        else:
            raise AssertionError(f"state_passing={bad!r} was accepted")


def test_state_passing_lanes_continue_after_filler_rows_only():
    """passed_rows='filler': a passed row is the task's filler alone (nothing scored) and its lane's
    next row continues it; a scored row always ends its lane's stream, so no earlier answer is
    ever in the memory of a scored row. passed_rows='task': every row is scored, resets at random."""
    from smt.evaluation.passkey import FIRST_VALUE

    passing = TaskConfig(**{**TASK.to_dict(), "state_passing": 0.5})
    batcher = TaskBatcher(passing, 64, seed=2)
    previous = None
    for _ in range(4):
        batch = batcher.next_batch()
        filler = (batch.targets == -100).all(1)
        assert 0 < int(filler.sum()) < 64
        assert bool((batch.inputs[filler] >= FIRST_VALUE + TASK.n_values).all())  # filler symbols only
        assert bool((batch.targets[~filler] != -100).any(1).all())  # every task row is scored
        if previous is None:
            assert bool(batch.reset.all())
        else:
            assert torch.equal(batch.reset, ~previous)  # continue exactly after a filler row
        previous = filler
    again = TaskBatcher(passing, 64, seed=2)
    again.load_state_dict(batcher.state_dict())  # resuming repeats the lanes without extra state
    batcher_next, again_next = batcher.next_batch(), again.next_batch()
    assert torch.equal(batcher_next.reset, again_next.reset) and torch.equal(batcher_next.inputs, again_next.inputs)
    paper = TaskBatcher(TaskConfig(**{**passing.to_dict(), "passed_rows": "task"}), 64, seed=2)
    batch = paper.next_batch()
    assert bool((batch.targets != -100).any(1).all())
    assert 0 < int(paper.next_batch().reset.sum()) < 64
    for name in ("mqar", "selective_copy", "induction_heads"):
        task = TaskConfig(name=name, seq_len=64, n_values=16)
        row = task.sample_filler(torch.Generator().manual_seed(0))
        assert row.shape == (64,) and int(row.min()) >= 0 and int(row.max()) < task.vocab_size
        scored = task.sample(torch.Generator().manual_seed(0))[0]
        assert set(row.tolist()) <= set(range(task.vocab_size))
        assert not torch.equal(row, scored)


def test_state_passing_carries_the_memory_from_one_batch_to_the_next(tmp_path):
    """The trainer runs a task with state passing in its stream mode: the carried state it saves
    has lanes that went on through several batches (position beyond one row)."""
    from safetensors.torch import load_file

    from smt.training.checkpoint import list_checkpoints

    torch.set_num_threads(min(2, torch.get_num_threads()))
    task = TaskConfig(**{**TASK.to_dict(), "state_passing": 0.75})
    training = TrainingConfig(batch_size=8, seq_len=TASK.seq_len, lr=1e-3, warmup_steps=1, max_steps=4,
                              log_interval=1, checkpoint_interval=10**6, seed=1)
    run = RunConfig(output_dir=str(tmp_path / "passing"), progress=False, tensorboard=False)
    train_task(FullConfig(tiny("smt"), training, run), task, eval_samples=4)
    assert "batching: stream" in (tmp_path / "passing" / "config.yaml").read_text()
    carried = load_file(str(list_checkpoints(tmp_path / "passing" / "checkpoints")[-1] / "stream_state.safetensors"))
    position = carried["position"]  # after a scored row every lane restarts: the last row ends at >= seq_len
    assert int(position.max()) > TASK.seq_len and int(position.min()) >= TASK.seq_len
    stream = TrainingConfig(batch_size=8, seq_len=TASK.seq_len, batching="stream", max_steps=1)
    try:
        train_task(FullConfig(tiny("smt"), stream, RunConfig(output_dir=str(tmp_path / "x"))), TASK)
    except ValueError as error:
        assert "state_passing" in str(error)
    else:
        raise AssertionError("stream batching without state passing was accepted")


def test_the_write_gate_penalty_reaches_the_optimizer(tmp_path):
    """write_gate_sparsity is the model's auxiliary loss; the Trainer optimises it beside the token loss."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    mean_gates = {}
    for sparsity in (1e-6, 5.0):
        config = StrideHybridConfig.tiny(vocab_size=TASK.vocab_size, pool_over_memory=False, write_gate=True,
                                         write_gate_sparsity=sparsity)
        training = TrainingConfig(batch_size=8, seq_len=TASK.seq_len, lr=1e-2, warmup_steps=1, weight_decay=0.0,
                                  max_steps=25, log_interval=100, checkpoint_interval=10**6, seed=1)
        run = RunConfig(output_dir=str(tmp_path / str(sparsity)), progress=False, tensorboard=False)
        model = train_task(FullConfig(config, training, run), TASK, eval_samples=4).model.eval()
        prompt = synthetic_passkey(TASK.seq_len, 0.5, torch.Generator().manual_seed(2), 1, TASK.n_values,
                                   TASK.n_filler, filler="random")
        with torch.no_grad():
            mean_gates[sparsity] = float(model(prompt.input_ids[None])[1]["write_gates"].mean())
    assert mean_gates[5.0] < 0.5 * mean_gates[1e-6], mean_gates


def test_task_batches_are_seeded_and_score_only_answers():
    task = TaskConfig(name="passkey", seq_len=30, key_length=2)
    a, b = TaskBatcher(task, 4, seed=5), TaskBatcher(task, 4, seed=5)
    first, second = a.next_batch(), b.next_batch()
    assert torch.equal(first.inputs, second.inputs) and first.inputs.shape == (4, 30)
    assert (first.targets != -100).sum(1).tolist() == [2] * 4
    row = first.inputs[0]
    query = int((row == QUERY_MARK).nonzero()[0])
    assert first.targets[0, query] == row[query + 1]  # teacher forcing: the answer follows the question
    state = a.state_dict()
    after = a.next_batch()
    b.load_state_dict(state)
    assert torch.equal(b.next_batch().inputs, after.inputs)
    mqar = TaskConfig(name="mqar", seq_len=40)
    inputs, targets = next(iter(TaskBatcher(mqar, 2, seed=0)))
    assert inputs.shape == targets.shape == (2, 40) and int(inputs.max()) < mqar.vocab_size
    with pytest.raises(ValueError, match="unknown"):
        TaskConfig(name="copy")


@pytest.mark.parametrize("name,scored", [("selective_copy", 8), ("induction_heads", 1)])
def test_task_batcher(name, scored):
    task = TaskConfig(name=name, seq_len=40, n_values=6, n_memorize=8)
    a, b = TaskBatcher(task, 4, seed=3), TaskBatcher(task, 4, seed=3)
    first = a.next_batch()
    assert torch.equal(first.inputs, b.next_batch().inputs)
    assert first.inputs.shape == first.targets.shape == (4, 40)
    assert int(first.inputs.min()) >= 0 and int(first.inputs.max()) < task.vocab_size
    assert (first.targets != -100).sum(1).tolist() == [scored] * 4
    assert (first.targets[:, -scored:] != -100).all()
    state = a.state_dict()
    after = a.next_batch()
    b.load_state_dict(state)
    assert torch.equal(b.next_batch().targets, after.targets)
    inputs, targets = next(iter(TaskBatcher(task, 2, seed=0)))
    assert inputs.shape == targets.shape == (2, 40)


def test_train_task_runs_the_trainer_on_induction_heads(tmp_path):
    task = TaskConfig(name="induction_heads", seq_len=16, n_values=4)
    model = StrideHybridConfig.tiny(vocab_size=task.vocab_size, arch="mamba")
    training = TrainingConfig(batch_size=4, seq_len=16, lr=1e-3, warmup_steps=1, max_steps=2, log_interval=1,
                              checkpoint_interval=10**6, seed=0)
    run = RunConfig(output_dir=str(tmp_path), progress=False, tensorboard=False)
    result = train_task(FullConfig(model, training, run), task, eval_samples=4)
    assert 0.0 <= result.evaluation["accuracy"] <= 1.0 and result.evaluation["task"] == "induction_heads"
    saved = json.loads((tmp_path / "task_eval.json").read_text())
    assert saved["task_config"]["name"] == "induction_heads" and saved["seq_len"] == 16
