"""The Trainer's hooks (smt.training.callbacks) and its optimizer choice: per-step diagnostics,
a start from a saved model that lacks some new parameters, and torch's AdamW on every parameter."""

from __future__ import annotations

import io

import pytest
import torch

from smt import StrideHybridConfig, TrainingConfig
from smt.evaluation.tasks import TaskConfig
from smt.models.baselines import build_model
from smt.training.callbacks import LoadWeights, StepDiagnostics, StepInfo, TrainerCallback
from smt.training.optimizer import adamw_every_parameter
from smt.training.run_config import FullConfig, RunConfig
from smt.training.train_task import train_task

TASK = TaskConfig(name="passkey", seq_len=16, key_length=1, n_values=4, n_filler=4, filler="random")


def tiny(**overrides) -> StrideHybridConfig:
    return StrideHybridConfig.tiny(vocab_size=TASK.vocab_size, **overrides)


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.models, self.steps = [], []

    def on_model(self, model) -> None:
        self.models.append(model)

    def on_step(self, info: StepInfo) -> None:
        self.steps.append(info)


def test_callbacks_see_every_step_and_the_optimizer_factory_builds_the_optimizer(tmp_path):
    built = []

    def factory(model, training):
        built.append(adamw_every_parameter(model, training))
        return built[-1]

    recorder, diagnostics = Recorder(), StepDiagnostics(every=2)
    training = TrainingConfig(batch_size=4, seq_len=TASK.seq_len, lr=1e-3, warmup_steps=1, weight_decay=0.01,
                              max_steps=4, log_interval=1, checkpoint_interval=2, seed=1)
    config = FullConfig(tiny(), training, RunConfig(output_dir=str(tmp_path), progress=False))
    result = train_task(config, TASK, eval_samples=2, callbacks=[recorder, diagnostics], optimizer_factory=factory)
    assert len(recorder.models) == 1 and len(built) == 1
    assert len(built[0].param_groups) == 1 and built[0].param_groups[0]["weight_decay"] == 0.01  # every parameter
    assert [info.step for info in recorder.steps] == [1, 2, 3, 4]
    losses = [info.loss for info in recorder.steps]
    assert losses == [result.train.losses[step] for step in (1, 2, 3, 4)]
    gates = recorder.steps[-1].outputs["write_gates"]
    assert not gates.requires_grad and gates.shape[0] == training.batch_size
    assert diagnostics.losses == [[2, pytest.approx((losses[0] + losses[1]) / 2)],
                                  [4, pytest.approx((losses[2] + losses[3]) / 2)]]
    norms = [info.grad_norm for info in recorder.steps]
    assert [r["step"] for r in diagnostics.records] == [2, 4]
    assert diagnostics.records[1]["grad_norm"] == max(norms[2:])  # the upper median of two
    assert diagnostics.records[1]["gate_mean"] == pytest.approx(float(gates.mean()))
    assert 0.0 <= diagnostics.records[1]["gates_closed"] <= 1.0
    again = Recorder()  # a resume: the checkpoint's model, no on_model; the steps go on
    longer = FullConfig(tiny(), training.replace(max_steps=6), config.run)
    train_task(longer, TASK, resume=True, eval_samples=2, callbacks=[again], optimizer_factory=factory)
    assert again.models == [] and [info.step for info in again.steps] == [5, 6]


def test_step_diagnostics_without_write_gates_and_the_progress_line():
    out = io.StringIO()
    diagnostics = StepDiagnostics(every=2, progress_every=4, file=out)
    for step in range(1, 7):
        diagnostics.on_step(StepInfo(step, loss=float(step), grad_norm=10.0 - step, lr=1e-3))
    assert diagnostics.losses == [[2, 1.5], [4, 3.5], [6, 5.5]]
    assert [r["grad_norm"] for r in diagnostics.records] == [9.0, 7.0, 5.0]  # the upper median
    assert all(r["gate_mean"] is None and r["gates_closed"] is None for r in diagnostics.records)
    assert out.getvalue() == "step 4: loss 3.500\n"
    with pytest.raises(ValueError, match="every"):
        StepDiagnostics(every=0)


def test_load_weights_lets_only_the_named_parameters_be_new(tmp_path):
    torch.manual_seed(0)
    ungated = build_model(tiny(write_gate=False))
    ungated.save_pretrained(tmp_path / "ungated")
    gated = build_model(tiny())
    LoadWeights(tmp_path / "ungated", may_be_new=("pooling.gate.",)).on_model(gated)
    for name, tensor in ungated.state_dict().items():
        assert torch.equal(gated.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match=r"missing \['pooling\.gate.*nothing may be new"):
        LoadWeights(tmp_path / "ungated").on_model(build_model(tiny()))
    with pytest.raises(ValueError, match="unexpected"):  # the gated model into an ungated one
        gated.save_pretrained(tmp_path / "gated")
        LoadWeights(tmp_path / "gated", may_be_new=("pooling.gate.",)).on_model(build_model(tiny(write_gate=False)))
    with pytest.raises(ValueError, match="does not fit"):
        LoadWeights(tmp_path / "ungated").on_model(build_model(tiny(write_gate=False, d_model=32)))
