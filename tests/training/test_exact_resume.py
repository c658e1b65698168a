"""A resumed run is the uninterrupted run: the same logged records, weights and optimizer state,
bit for bit, wherever it was stopped (by a signal, which saves a checkpoint at that step, or by a
kill, which loses the steps after the last checkpoint) and whatever the log, checkpoint and eval
intervals are (issue 39, section 1)."""

from __future__ import annotations

import csv
import json
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from smt.training.checkpoint import list_checkpoints, step_dir_name
from smt.training.stop_signals import TrainingInterrupted
from smt.training.trainer import Trainer
from tests.training.helpers import synthetic_view, tiny_config

VIEW = synthetic_view()
TIMING = {"tokens_per_s", "elapsed_s", "peak_rss_mib"}  # wall-clock measurements, never repeatable
STEPS = 8


class SignalledTrainer(Trainer):
    """Sends itself SIGINT right after step `signal_at`, as a Ctrl-C during that step would."""

    signal_at: int | None = None

    def _step(self, run, ctx):
        outcome = super()._step(run, ctx)
        if run.step == self.signal_at:
            signal.raise_signal(signal.SIGINT)
        return outcome


def _train(run_dir: Path, batching: str, intervals: dict, stops: list[tuple[str, int]]) -> None:
    """Train to STEPS, stopped at each (how, step) of `stops` and resumed after it."""
    config = tiny_config(run_dir, batching, max_steps=STEPS, eval_batches=2, **intervals)
    resume = False
    for how, step in stops:
        trainer = SignalledTrainer(config, VIEW, VIEW)
        if how == "signal":
            trainer.signal_at = step
            with pytest.raises(TrainingInterrupted):
                trainer.train(resume=resume, overwrite=not resume)
        else:  # a kill: nothing is saved after the last checkpoint
            trainer.train(resume=resume, overwrite=not resume, stop_after=step)
        resume = bool(list_checkpoints(run_dir / "checkpoints"))
    Trainer(config, VIEW, VIEW).train(resume=resume, overwrite=not resume)


def _records(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl and metrics.csv without their wall-clock fields."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    jsonl = [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]
    with open(run_dir / "metrics.csv", encoding="utf-8", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]
    return jsonl, rows


def _assert_same(a, b, where: str = "") -> None:
    """Recursive equality, tensors by torch.equal (bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{index}]")
    else:
        assert a == b, (where, a, b)


def _assert_same_run(reference: Path, resumed: Path) -> None:
    assert _records(resumed) == _records(reference)
    final = step_dir_name(STEPS)
    a, b = reference / "checkpoints" / final, resumed / "checkpoints" / final
    from safetensors.torch import load_file

    _assert_same(load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors")), "weights")
    _assert_same(torch.load(a / "optimizer.pt", weights_only=True), torch.load(b / "optimizer.pt", weights_only=True),
                 "optimizer.pt")
    record_a, record_b = (json.loads((d / "training.json").read_text()) for d in (a, b))
    for record in (record_a, record_b):
        state = record["trainer"]
        del state["elapsed_s"], state["window"]["time"]
        (state["last_eval"] or {}).pop("elapsed_s", None)
    for name in ("trainer", "data_position", "step"):
        assert record_a[name] == record_b[name], name
    stream = a / "stream_state.safetensors"
    if stream.is_file():
        _assert_same(load_file(str(stream)), load_file(str(b / "stream_state.safetensors")), "stream state")


stop = st.tuples(st.sampled_from(["signal", "kill"]), st.integers(1, STEPS - 1))
stops_in_order = st.lists(stop, min_size=1, max_size=2, unique_by=lambda s: s[1]).map(
    lambda stops: sorted(stops, key=lambda item: item[1]))


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.generate])
@given(batching=st.sampled_from(["random", "stream"]),
       log_interval=st.integers(1, 4), checkpoint_interval=st.integers(1, 5), eval_interval=st.integers(1, 5),
       keep_last_checkpoints=st.integers(1, 3), accumulation=st.integers(1, 2),
       stops=stops_in_order)
@pytest.mark.slow
def test_a_resumed_run_is_the_uninterrupted_run_bit_for_bit(batching, log_interval, checkpoint_interval,
                                                           eval_interval, keep_last_checkpoints, accumulation, stops):
    intervals = {"log_interval": log_interval, "checkpoint_interval": checkpoint_interval,
                 "eval_interval": eval_interval, "keep_last_checkpoints": keep_last_checkpoints,
                 "gradient_accumulation_steps": accumulation}
    with tempfile.TemporaryDirectory() as tmp:
        reference, resumed = Path(tmp) / "reference", Path(tmp) / "resumed"
        _train(reference, batching, intervals, [])
        _train(resumed, batching, intervals, stops)
        _assert_same_run(reference, resumed)


def test_a_checkpoint_inside_a_logging_window_logs_the_same_record(tmp_path, capsys):
    """The reported case: log_interval 3, the run killed after a checkpoint at step 4; before the
    fix the record of step 6 averaged steps 5-6 only, and tokens_seen restarted from zero."""
    intervals = {"log_interval": 3, "checkpoint_interval": 4, "eval_interval": 100}
    _train(tmp_path / "a", "random", intervals, [])
    _train(tmp_path / "b", "random", intervals, [("kill", 5)])
    straight, resumed = (_records(tmp_path / name)[0] for name in ("a", "b"))
    assert [r["step"] for r in resumed if r["split"] == "train"] == [3, 6, 8]
    assert resumed == straight
    assert "changed settings" not in capsys.readouterr().err  # an unchanged resume has nothing to note


def _logged_lr(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["step"]: r["lr"] for r in map(json.loads, lines) if r["split"] == "train"}


def test_resume_applies_a_new_lr_and_length_and_says_so(tmp_path, capsys):
    """Before, config.yaml said lr 1e-2 / max_steps 10 while the restored schedule kept 3e-3 over 6 steps."""
    from smt.training.run_config import load_run_config
    from smt.training.schedule import lr_factor

    Trainer(tiny_config(tmp_path, max_steps=6, log_interval=1), VIEW).train()
    changed = tiny_config(tmp_path, max_steps=10, log_interval=1, lr=1e-2, beta2=0.9)
    Trainer(changed, VIEW).train(resume=True)
    note = capsys.readouterr().err
    assert "changed settings, which apply from step 7 on" in note
    assert "training.lr 0.003 -> 0.01" in note and "training.max_steps 6 -> 10" in note and "training.beta2" in note
    assert load_run_config(tmp_path / "config.yaml").to_dict() == changed.to_dict()
    lr = _logged_lr(tmp_path)  # the run had decayed to its floor: it trains on there, at the new lr's floor
    assert [lr[step] for step in range(7, 11)] == [1e-2 * lr_factor(step - 1, 2, 10, 0.1, 6, 1.0)
                                                   for step in range(7, 11)]
    assert [lr[step] for step in range(7, 11)] == [pytest.approx(1e-3)] * 4
    saved = torch.load(tmp_path / "checkpoints" / step_dir_name(10) / "optimizer.pt", weights_only=True)
    assert saved["scheduler"]["base_lrs"] == [1e-2, 1e-2]
    assert [tuple(g["betas"]) for g in saved["optimizer"]["param_groups"]] == [(0.9, 0.9)] * 2


def test_resume_past_the_end_is_refused_and_at_the_end_is_named(tmp_path, capsys):
    """Before, `--resume --max_steps 4` on a checkpoint at step 6 ended with exit 0 having done nothing."""
    from smt.config import ConfigError

    Trainer(tiny_config(tmp_path, max_steps=6), VIEW).train()
    config_before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"step_000006 is at step 6, past the run's end \(training.max_steps=4\)"
                                          r".*--max_steps above 6"):
        Trainer(tiny_config(tmp_path, max_steps=4), VIEW).train(resume=True)
    assert (tmp_path / "config.yaml").read_text() == config_before  # nothing rewritten
    result = Trainer(tiny_config(tmp_path, max_steps=6, lr=1e-2), VIEW).train(resume=True)
    assert result.losses == {}
    err = capsys.readouterr().err
    assert "already at the run's end (training.max_steps=6); nothing to train" in err
    assert "changed settings" not in err and (tmp_path / "config.yaml").read_text() == config_before


def test_extending_a_run_stretches_the_decay_without_a_jump_and_says_so(tmp_path, capsys):
    """Before, `--resume --max_steps 16` on a run of 8 stopped at step 4 jumped the lr from the 8-step
    schedule's value to the 16-step schedule's, without a word."""
    from smt.training.schedule import lr_factor

    Trainer(tiny_config(tmp_path / "short", max_steps=8, log_interval=1), VIEW).train()
    straight = _logged_lr(tmp_path / "short")
    run = tmp_path / "extended"
    Trainer(tiny_config(run, max_steps=8, log_interval=1, checkpoint_interval=4), VIEW).train(stop_after=4)
    capsys.readouterr()
    Trainer(tiny_config(run, max_steps=16, log_interval=1, checkpoint_interval=4), VIEW).train(resume=True)
    note = capsys.readouterr().err
    assert "the run's length changes from 8 to 16 steps; the rest of the cosine decay is stretched over steps " \
           "5-16" in note and "without a jump" in note
    lr = _logged_lr(run)
    assert [lr[step] for step in range(1, 6)] == [straight[step] for step in range(1, 6)]  # step 5: no jump
    progress_at_4 = (4 - 2) / (8 - 2)
    assert [lr[step] for step in range(5, 17)] == [3e-3 * lr_factor(step - 1, 2, 16, 0.1, 4, progress_at_4)
                                                   for step in range(5, 17)]
    assert all(a > b for a, b in zip([lr[s] for s in range(5, 16)], [lr[s] for s in range(6, 17)]))
    assert 3e-4 < lr[16] < 3.3e-4  # next to the floor at the new end


def test_a_resume_of_an_extended_run_is_the_uninterrupted_extended_run(tmp_path, capsys):
    """The stretched schedule is saved with the checkpoint: the extension stopped at step 10 and
    resumed (same max_steps) logs the same records as the extension run in one go."""
    for name, stops in (("one_go", [16]), ("stopped", [10, 16])):
        run = tmp_path / name
        Trainer(tiny_config(run, max_steps=8, checkpoint_interval=2), VIEW, VIEW).train(stop_after=4)
        for stop in stops:
            Trainer(tiny_config(run, max_steps=16, checkpoint_interval=2), VIEW, VIEW).train(resume=True,
                                                                                            stop_after=stop)
    assert _records(tmp_path / "stopped") == _records(tmp_path / "one_go")
    assert capsys.readouterr().err.count("the run's length changes from 8 to 16") == 2


def test_extending_a_finished_run_says_it_trains_at_the_floor(tmp_path, capsys):
    Trainer(tiny_config(tmp_path, max_steps=6, log_interval=1), VIEW).train()
    capsys.readouterr()
    Trainer(tiny_config(tmp_path, max_steps=9, log_interval=1), VIEW).train(resume=True)
    note = capsys.readouterr().err
    assert "already decayed to its floor, so steps 7-9 train at the floor lr 0.0003" in note
    assert "--init_from " + str(tmp_path / "checkpoints" / step_dir_name(6)) in note
    lr = _logged_lr(tmp_path)
    assert [lr[step] for step in (7, 8, 9)] == [pytest.approx(3e-4)] * 3
