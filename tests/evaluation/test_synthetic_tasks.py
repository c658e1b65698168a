"""Selective copying and induction heads (Mamba, sec. 4.1): layouts checked by hand, seeded
generation, size checks, batches, and scoring that an oracle passes and a constant guess does not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smt import StrideHybridConfig
from smt.evaluation.mqar import teacher_forced_accuracy
from smt.evaluation.synthetic import (
    COPY_FIRST_DATA,
    COPY_MARK,
    COPY_NOISE,
    INDUCTION_FIRST_DATA,
    TRIGGER,
    induction_heads_vocab_size,
    selective_copy_vocab_size,
    synthetic_induction_heads,
    synthetic_selective_copy,
)
from smt.evaluation.tasks import TaskConfig, evaluate_task
from smt.models.baselines import build_model

IGNORE = -100


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------- selective copying
def test_selective_copy_vocab_and_a_prefix_full_of_data():
    assert selective_copy_vocab_size(16) == 18 and (COPY_NOISE, COPY_MARK, COPY_FIRST_DATA) == (0, 1, 2)
    # seq_len = 2 * n_memorize: the prefix is all data, no noise: d1 d2 d3 MARK d1 d2
    s = synthetic_selective_copy(6, gen(3), n_tokens=4, n_memorize=3)
    d = s.data.tolist()
    assert s.input_ids.tolist() == [*d, COPY_MARK, d[0], d[1]]
    assert s.targets.tolist() == [IGNORE, IGNORE, IGNORE, *d]
    assert s.data_positions.tolist() == [0, 1, 2] and s.answer_positions.tolist() == [3, 4, 5]
    assert all(2 <= t < 6 for t in d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selective_copy_layout(seed):
    n_tokens, n_memorize, seq_len = 5, 6, 40
    s = synthetic_selective_copy(seq_len, gen(seed), n_tokens=n_tokens, n_memorize=n_memorize)
    ids, targets = s.input_ids.tolist(), s.targets.tolist()
    prefix = seq_len - n_memorize
    assert len(ids) == len(targets) == seq_len and s.input_ids.dtype == s.targets.dtype == torch.long
    assert min(ids) >= 0 and max(ids) < selective_copy_vocab_size(n_tokens)
    # the prefix: data tokens where data_positions say, noise everywhere else, no marker
    data_in_prefix = [(i, t) for i, t in enumerate(ids[:prefix]) if t != COPY_NOISE]
    assert [i for i, _ in data_in_prefix] == s.data_positions.tolist()
    assert [t for _, t in data_in_prefix] == s.data.tolist()
    assert all(COPY_FIRST_DATA <= t < COPY_FIRST_DATA + n_tokens for _, t in data_in_prefix)
    # then the marker and the copy so far; the targets are exactly the data tokens in order
    assert ids[prefix] == COPY_MARK and COPY_MARK not in ids[:prefix] + ids[prefix + 1 :]
    assert ids[prefix + 1 :] == s.data.tolist()[:-1]
    assert s.answer_positions.tolist() == list(range(prefix, seq_len))
    assert targets[prefix:] == s.data.tolist()
    assert targets[:prefix] == [IGNORE] * prefix


def test_selective_copy_is_seeded_and_spreads_its_data():
    a = synthetic_selective_copy(64, gen(7), n_tokens=16, n_memorize=16)
    b = synthetic_selective_copy(64, gen(7), n_tokens=16, n_memorize=16)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.targets, b.targets)
    c = synthetic_selective_copy(64, gen(8), n_tokens=16, n_memorize=16)
    assert not torch.equal(a.input_ids, c.input_ids)
    g = gen(0)
    seen = torch.cat([synthetic_selective_copy(12, g, n_tokens=3, n_memorize=2).data_positions for _ in range(200)])
    assert set(seen.tolist()) == set(range(10))  # every prefix position is used


def test_selective_copy_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"seq_len=10 .* n_memorize=6.*seq_len >= 12"):
        synthetic_selective_copy(10, gen(), n_tokens=4, n_memorize=6)
    with pytest.raises(ValueError, match="n_tokens=1"):
        synthetic_selective_copy(40, gen(), n_tokens=1)
    with pytest.raises(ValueError, match="n_memorize=0"):
        synthetic_selective_copy(40, gen(), n_memorize=0)


# ---------------------------------------------------------------------------- induction heads
def test_induction_heads_vocab_and_the_shortest_sequence():
    assert induction_heads_vocab_size(16) == 17 and (TRIGGER, INDUCTION_FIRST_DATA) == (0, 1)
    s = synthetic_induction_heads(3, gen(5), n_tokens=4)  # TRIGGER a TRIGGER is the only layout
    assert s.trigger_position == 0 and 1 <= s.answer <= 4
    assert s.input_ids.tolist() == [TRIGGER, s.answer, TRIGGER]
    assert s.targets.tolist() == [IGNORE, IGNORE, s.answer]


@pytest.mark.parametrize("seq_len", [8, 256, 1024, 4096])
def test_induction_heads_layout_at_any_length(seq_len):
    g = gen(11)  # one generator for every length
    for _ in range(3):
        s = synthetic_induction_heads(seq_len, g, n_tokens=16)
        ids = s.input_ids.tolist()
        assert len(ids) == len(s.targets) == seq_len and min(ids) >= 0 and max(ids) < 17
        triggers = [i for i, t in enumerate(ids) if t == TRIGGER]
        assert triggers == [s.trigger_position, seq_len - 1]
        assert s.answer == ids[s.trigger_position + 1] and s.answer != TRIGGER
        assert s.targets[-1] == s.answer and (s.targets[:-1] == IGNORE).all()


def test_induction_heads_is_seeded_and_places_the_trigger_anywhere():
    a, b = synthetic_induction_heads(256, gen(4)), synthetic_induction_heads(256, gen(4))
    assert torch.equal(a.input_ids, b.input_ids) and a.answer == b.answer
    g = gen(0)
    positions = {synthetic_induction_heads(8, g, n_tokens=4).trigger_position for _ in range(200)}
    assert positions == set(range(6))  # [0, seq_len - 3]: the answer always precedes the last trigger


def test_induction_heads_rejects_bad_sizes():
    with pytest.raises(ValueError, match="seq_len=2.*seq_len >= 3"):
        synthetic_induction_heads(2, gen())
    with pytest.raises(ValueError, match="n_tokens=1"):
        synthetic_induction_heads(64, gen(), n_tokens=1)


# ------------------------------------------------------------------------- the task config
def test_task_config_for_the_new_tasks():
    copy = TaskConfig(name="selective_copy", seq_len=48, n_values=16, n_memorize=8)
    heads = TaskConfig.from_dict({"name": "induction_heads", "seq_len": 32, "n_values": 16})
    assert copy.vocab_size == 18 and heads.vocab_size == 17
    assert copy.chance == heads.chance == 1 / 16
    assert TaskConfig.from_dict("induction_heads").name == "induction_heads"
    assert TaskConfig.from_dict(copy.to_dict()) == copy
    assert heads.with_seq_len(4096).seq_len == 4096
    with pytest.raises(ValueError, match=r"n_memorize=16.*seq_len >= 32 or a smaller n_memorize"):
        TaskConfig(name="selective_copy", seq_len=20)
    with pytest.raises(ValueError, match="n_values=1.*raise n_values"):
        TaskConfig(name="induction_heads", n_values=1)
    with pytest.raises(ValueError, match="n_memorize=0"):
        TaskConfig(name="selective_copy", n_memorize=0)
    with pytest.raises(ValueError, match="induction_heads: seq_len=2"):
        TaskConfig(name="induction_heads", seq_len=2)
    with pytest.raises(ValueError, match="selective_copy"):
        copy.with_seq_len(10)


# ------------------------------------------------------------------------------- scoring
class Stub(nn.Module):
    """A "model" whose logits put all mass on `predict(row)`: {position: token} per row."""

    def __init__(self, vocab_size: int, predict) -> None:
        super().__init__()
        self.vocab_size, self.predict = vocab_size, predict
        self.anchor = nn.Parameter(torch.zeros(()))  # scoring reads the device from a parameter

    def forward(self, input_ids, state=None):
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for b, row in enumerate(input_ids):
            for position, token in self.predict(row).items():
                logits[b, position, token] = 1.0
        return logits, {}


def copy_oracle(row):
    mark = int((row == COPY_MARK).nonzero()[0])
    data = row[:mark][row[:mark] >= COPY_FIRST_DATA]
    return {mark + k: int(token) for k, token in enumerate(data)}


def induction_oracle(row):
    first = int((row[:-1] == TRIGGER).nonzero()[0])
    return {len(row) - 1: int(row[first + 1])}


def mqar_oracle(row, n_keys=16):
    out = {}
    for q in range(len(row)):
        key = int(row[q])
        first = int((row == key).nonzero()[0])
        if key < n_keys and first < q:  # a key seen before: its value followed it
            out[q] = int(row[first + 1])
    return out


@pytest.mark.parametrize("task,oracle", [
    (TaskConfig(name="selective_copy", seq_len=48, n_values=8, n_memorize=6), copy_oracle),
    (TaskConfig(name="induction_heads", seq_len=48, n_values=8), induction_oracle),
    (TaskConfig(name="mqar", seq_len=48, n_values=8), mqar_oracle),
])
def test_an_oracle_scores_one_and_a_constant_guess_scores_its_hit_rate(task, oracle):
    result = evaluate_task(Stub(task.vocab_size, oracle), task, n_samples=12, seed=1)
    assert result["accuracy"] == 1.0 and result["n_samples"] == 12 and result["seq_len"] == 48
    assert result["chance"] == 1 / 8 and result["task"] == task.name
    longer = evaluate_task(Stub(task.vocab_size, oracle), task, n_samples=4, seed=1, seq_len=200)
    assert longer["accuracy"] == 1.0 and longer["seq_len"] == 200  # length extrapolation
    # always answering one symbol is right exactly where the target is that symbol
    g = torch.Generator().manual_seed(1)
    samples = [task.sample_sequence(g) for _ in range(12)]
    guess = int(samples[0].targets[samples[0].targets != IGNORE][0])
    constant = Stub(task.vocab_size, lambda row: dict.fromkeys(range(len(row)), guess))
    scored = torch.cat([s.targets[s.targets != IGNORE] for s in samples])
    assert teacher_forced_accuracy(constant, samples, batch_size=5) == pytest.approx(
        float((scored == guess).float().mean()))
    assert teacher_forced_accuracy(constant, samples) < 1.0


def test_a_shifted_copy_scores_zero():
    task = TaskConfig(name="selective_copy", seq_len=32, n_values=4, n_memorize=4)

    def one_late(row):  # predicts each token one step too late: the token it was just given
        return {p: int(row[p]) for p in copy_oracle(row)}

    result = evaluate_task(Stub(task.vocab_size, one_late), task, n_samples=8)
    assert result["accuracy"] < 0.5


@pytest.mark.parametrize("name", ["selective_copy", "induction_heads", "mqar", "passkey"])
def test_evaluate_a_tiny_mamba_at_two_lengths(name):
    torch.manual_seed(0)
    task = TaskConfig(name=name, seq_len=40, n_values=8, n_memorize=6, n_filler=4, key_length=1)
    model = build_model(StrideHybridConfig.tiny(vocab_size=task.vocab_size, arch="mamba")).eval()
    for seq_len in (None, 96):
        result = evaluate_task(model, task, n_samples=4, depths=[0.5], seq_len=seq_len)
        assert result["seq_len"] == (seq_len or 40) and result["task"] == name
        accuracy = result["exact"] if name == "passkey" else result["accuracy"]
        assert 0.0 <= accuracy <= 1.0 and result["chance"] == 1 / 8
    if name == "passkey":
        assert result["context_length"] == 96
    with pytest.raises(ValueError, match="seq_len"):
        evaluate_task(model, task, n_samples=2, seq_len=2)
    again = evaluate_task(model, task, n_samples=4, depths=[0.5])
    assert again == evaluate_task(model, task, n_samples=4, depths=[0.5])  # fixed held-out samples
