"""Task generators are deterministic and put keys where they say; scoring matches direct sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smt import StrideHybridConfig
from smt.evaluation.mqar import synthetic_mqar
from smt.evaluation.passkey import (
    KEY_MARK,
    QUERY_MARK,
    candidate_log_likelihoods,
    passkey_grid,
    plot_passkey_heatmap,
    score_passkey,
    synthetic_passkey,
    text_passkey,
)
from smt.evaluation.tasks import TaskConfig
from smt.models.baselines import build_model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_synthetic_passkey_places_the_key(depth):
    sample = synthetic_passkey(40, depth, gen(), key_length=3, n_values=10, n_filler=5)
    ids = sample.input_ids
    assert len(ids) == 40 and ids[-1] == QUERY_MARK
    assert ids[sample.key_start - 1] == KEY_MARK
    assert torch.equal(ids[sample.key_start : sample.key_start + 3], sample.answer)
    assert sample.key_start - 1 == round(depth * (40 - 3 - 2))
    assert all(not torch.equal(d, sample.answer) for d in sample.distractors) and len(sample.distractors) == 9
    again = synthetic_passkey(40, depth, gen(), key_length=3, n_values=10, n_filler=5)
    assert torch.equal(again.input_ids, ids)
    with pytest.raises(ValueError, match="depth"):
        synthetic_passkey(40, 1.5, gen())


def test_text_passkey_with_the_gpt2_tokenizer(shared_data):
    from smt.data import load_tokenizer

    tokenizer = load_tokenizer(shared_data / "tokenizers" / "gpt2")
    sample = text_passkey(tokenizer, 300, 0.5, gen(3))
    text = tokenizer.decode(sample.input_ids.tolist())
    key = tokenizer.decode(sample.answer.tolist()).strip()
    assert len(key) == 5 and key.isdigit()
    assert f"The pass key is {key}." in text and text.endswith("The pass key is")
    assert "The grass is green." in text
    assert abs(len(sample.input_ids) - 300) <= 2
    before = tokenizer.decode(sample.input_ids[: sample.key_start].tolist())
    assert f"{key}" not in before and abs(len(before) - len(text) / 2) < len(text) * 0.15


def test_mqar_generator():
    s = synthetic_mqar(48, gen(1), n_pairs=5, n_queries=3, n_keys=16, n_values=8, n_filler=4)
    assert len(s.input_ids) == 48
    keys = s.input_ids[s.pair_positions]
    assert len(set(keys.tolist())) == 5 and int(keys.max()) < 16
    pairs = dict(zip(keys.tolist(), s.input_ids[s.pair_positions + 1].tolist()))
    scored = (s.targets != -100).nonzero().flatten()
    assert torch.equal(scored, s.query_positions)
    for q in s.query_positions.tolist():
        assert s.targets[q] == pairs[int(s.input_ids[q])]
    assert torch.equal(synthetic_mqar(48, gen(1), 5, 3, 16, 8, 4).input_ids, s.input_ids)


def test_candidate_likelihoods_match_direct_sums():
    torch.manual_seed(0)
    model = build_model(StrideHybridConfig.tiny()).eval()
    prompt = torch.randint(0, 256, (1, 21))
    candidates = [torch.tensor([5, 6, 7]), torch.tensor([9]), torch.tensor([1, 2])]
    with torch.no_grad():
        logits, aux = model(prompt)
        got = candidate_log_likelihoods(model, logits[0, -1], aux["state"], candidates)
        for i, c in enumerate(candidates):
            full, _ = model(torch.cat([prompt[0], c])[None])
            logp = full[0, 20:-1].log_softmax(-1).gather(-1, c[:, None]).sum()
            assert got[i] == pytest.approx(float(logp), abs=1e-4)


def test_passkey_scoring_and_grid(tmp_path):
    torch.manual_seed(0)
    model = build_model(StrideHybridConfig.tiny(vocab_size=32)).eval()
    samples = [synthetic_passkey(20, 0.5, gen(i), key_length=2) for i in range(5)]
    scores = score_passkey(model, samples, batch_size=2)
    for sample, exact in zip(samples, scores["exact"]):
        greedy = model.generate(sample.input_ids[None], max_new_tokens=2, temperature=0.0)[0, 20:]
        assert exact == torch.equal(greedy, sample.answer)
    grid = passkey_grid(model, lambda n, d, g: synthetic_passkey(n, d, g), [12, 20], [0.0, 1.0], n_samples=3)
    assert grid.exact.shape == (2, 2) and np.all((grid.exact >= 0) & (grid.exact <= 1))
    again = passkey_grid(model, lambda n, d, g: synthetic_passkey(n, d, g), [12, 20], [0.0, 1.0], n_samples=3)
    np.testing.assert_array_equal(grid.likelihood, again.likelihood)
    assert "| 12 |" in grid.to_markdown()
    assert plot_passkey_heatmap({"smt": grid, "swa": again}, tmp_path / "h.png").stat().st_size > 1000


class _PasskeyOracle(torch.nn.Module):
    """Predicts, at every position, the symbol right after the last KEY marker seen so far."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, self.vocab_size)
        for b, row in enumerate(ids.tolist()):
            marks = [i for i, t in enumerate(row) if t == 0]
            logits[b, :, row[marks[-1] + 1]] = 1.0
        return logits, {}


def test_key_distances_double_up_to_the_farthest():
    from smt.evaluation.tasks import key_distances

    assert key_distances(64) == [2, 4, 8, 16, 32, 61]
    assert key_distances(10) == [2, 4, 7]


def test_passkey_accuracy_by_distance_puts_the_key_where_it_says():
    from smt.evaluation.tasks import TaskConfig, passkey_accuracy_by_distance

    task = TaskConfig(name="passkey", seq_len=40, key_length=1, n_values=8, n_filler=16, filler="random")
    oracle = _PasskeyOracle(task.vocab_size)
    assert passkey_accuracy_by_distance(oracle, task, 100, n_samples=8) == {d: 1.0 for d in [2, 4, 8, 16, 32, 64, 97]}

    class LooksBack(_PasskeyOracle):  # reads the token `distance` places before the question
        def forward(self, ids):
            logits = torch.zeros(*ids.shape, self.vocab_size)
            logits[:, -1] = torch.nn.functional.one_hot(ids[:, -1 - 17], self.vocab_size).float()
            return logits, {}

    scores = passkey_accuracy_by_distance(LooksBack(task.vocab_size), task, 60, distances=[16, 17, 18], n_samples=8)
    assert scores == {16: 0.0, 17: 1.0, 18: 0.0}
    with pytest.raises(ValueError, match="does not fit"):
        passkey_accuracy_by_distance(oracle, task, 20, distances=[25])



class _MQAROracle(torch.nn.Module):
    """Answers MQAR queries from the input ids alone: with `bind`, the value paired with the asked key;
    without, the lowest value of the sequence not yet given as an answer (the elimination shortcut)."""

    def __init__(self, vocab: int, n_pairs: int, bind: bool) -> None:
        super().__init__()
        self.vocab, self.n_pairs, self.bind = vocab, n_pairs, bind
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs):
        logits = torch.zeros(*inputs.shape, self.vocab)
        for row, ids in enumerate(inputs.tolist()):
            keys, values = ids[0 : 2 * self.n_pairs : 2], ids[1 : 2 * self.n_pairs : 2]
            remaining = list(values)
            for position in range(2 * self.n_pairs, len(ids)):
                if ids[position] not in keys:
                    continue
                answer = values[keys.index(ids[position])] if self.bind else min(remaining)
                logits[row, position, answer] = 1.0
                if position + 1 < len(ids):  # the teacher-forced answer, seen from here on
                    remaining.remove(ids[position + 1])
        return logits, {}


def test_mqar_accuracy_by_query_separates_binding_from_elimination():
    from smt.evaluation.mqar import accuracy_by_query, no_binding_accuracy_by_query
    from smt.evaluation.tasks import evaluate_task

    task = TaskConfig(name="mqar", seq_len=40, n_pairs=4, n_queries=4, n_keys=16, n_values=16, n_filler=4,
                      mqar_answers="given")
    samples = [task.sample_sequence(gen(seed)) for seed in range(64)]
    binding = accuracy_by_query(_MQAROracle(task.vocab_size, 4, bind=True), samples)
    assert binding == [1.0, 1.0, 1.0, 1.0]
    shortcut = accuracy_by_query(_MQAROracle(task.vocab_size, 4, bind=False), samples)
    assert shortcut[-1] == 1.0  # the last answer is whatever value is left
    assert shortcut[0] < 0.5 < shortcut[-1]  # the first query has nothing to eliminate
    no_binding = no_binding_accuracy_by_query(samples, "given")
    assert no_binding[-1] == 1.0 and no_binding[0] < no_binding[2]
    assert shortcut[0] <= no_binding[0] + 0.1  # the oracle guesses the lowest value, not the most frequent
    result = evaluate_task(_MQAROracle(task.vocab_size, 4, bind=False), task, n_samples=32)
    assert result["first_query"] == result["by_query"][0] < result["accuracy"]


def test_mqar_hidden_answers_leave_nothing_to_eliminate():
    from smt.evaluation.mqar import binding_floor

    s = synthetic_mqar(40, gen(2), n_pairs=4, n_queries=4, n_keys=16, n_values=16, n_filler=4, answers="hidden")
    assert len(s.input_ids) == 40
    keys, values = s.input_ids[s.pair_positions], s.input_ids[s.pair_positions + 1]
    assert torch.equal(s.query_positions, torch.arange(36, 40))  # the queries follow each other, at the end
    assert sorted(s.input_ids[s.query_positions].tolist()) == sorted(keys.tolist())
    assert not bool(((s.input_ids[8:] >= 16) & (s.input_ids[8:] < 32)).any())  # no value after the pairs
    assert len(set(values.tolist())) == 4  # distinct: guessing the most frequent value scores 1 / P
    assert binding_floor([s]) == 0.25
    pairs = dict(zip(keys.tolist(), values.tolist()))
    assert [int(s.targets[q]) for q in s.query_positions] == [pairs[int(s.input_ids[q])] for q in s.query_positions]
    # the given form draws the same pairs and queries from the same generator state
    given = synthetic_mqar(40, gen(2), 4, 4, 16, 16, 4, answers="given")
    assert torch.equal(given.input_ids[given.pair_positions], keys)  # the same keys from the same generator state
    # Zoology's form, 8 pairs over 16 values: guessing the most frequent value, then eliminating given answers
    zoology = [synthetic_mqar(64, gen(seed), 8, 8, 16, 16, 16, answers="given") for seed in range(64)]
    assert 0.2 < binding_floor(zoology, "hidden") < 0.3 < 0.38 < binding_floor(zoology, "given") < 0.48
    with pytest.raises(ValueError, match="n_values"):
        synthetic_mqar(40, gen(2), 4, 4, 16, 2, 4, answers="hidden")
    with pytest.raises(ValueError, match="answers"):
        synthetic_mqar(40, gen(2), answers="shown")
    with pytest.raises(ValueError, match="mqar_answers"):
        TaskConfig(name="mqar", mqar_answers="shown")


def test_mqar_pairs_at_random_depth_keep_pairs_whole_and_answers_right():
    starts = set()
    for seed in range(40):
        s = synthetic_mqar(40, gen(seed), n_pairs=3, n_queries=3, n_keys=16, n_values=16, n_filler=4,
                           pairs_at="random")
        lead = int(s.pair_positions[0])
        starts.add(lead)
        assert torch.equal(s.pair_positions, lead + 2 * torch.arange(3))  # the pairs stay one block
        assert bool((s.input_ids[:lead] >= 32).all())  # filler before them
        assert torch.equal(s.query_positions, torch.arange(37, 40))  # the queries stay at the end
        keys, values = s.input_ids[s.pair_positions], s.input_ids[s.pair_positions + 1]
        assert bool((keys < 16).all()) and bool(((values >= 16) & (values < 32)).all())
        pairs = dict(zip(keys.tolist(), values.tolist()))
        assert [int(s.targets[q]) for q in s.query_positions] == [pairs[int(s.input_ids[q])]
                                                                   for q in s.query_positions]
        assert int((s.targets != -100).sum()) == 3
    assert min(starts) == 0 and max(starts) >= 25 and len(starts) > 15  # any depth, the gap's full range
    # "start" draws exactly what it drew before the option existed: the pairs open the sequence
    assert torch.equal(synthetic_mqar(40, gen(3), 3, 3, 16, 16, 4).pair_positions, torch.arange(3) * 2)
    with pytest.raises(ValueError, match="pairs_at"):
        synthetic_mqar(40, gen(2), pairs_at="middle")
    with pytest.raises(ValueError, match="mqar_pairs_at"):
        TaskConfig(name="mqar", mqar_pairs_at="middle")
