import numpy as np
import pytest
import torch

from smt.config import StrideHybridConfig
from smt.models.stride_hybrid import StrideHybridModel
from smt.training.batching import (
    IGNORE_INDEX,
    RandomWindowBatcher,
    StreamingBatcher,
    as_view,
    eval_batches,
)
from tests.training.helpers import EOS, synthetic_view


def test_random_windows_targets_are_inputs_shifted():
    view = synthetic_view()
    batch = RandomWindowBatcher(view, 4, 16, seed=1).next_batch()
    assert batch.inputs.shape == batch.targets.shape == (4, 16)
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    tokens = torch.from_numpy(view.tokens.astype(np.int64))
    for row in batch.inputs:  # every row is a real window of the corpus
        starts = [s for s in range(len(tokens) - 16) if torch.equal(tokens[s : s + 16], row)]
        assert starts
    assert batch.reset.all()


def test_random_windows_resume_and_rank_shards():
    view = synthetic_view()
    a = RandomWindowBatcher(view, 4, 16, seed=3)
    a.next_batch()
    saved = a.state_dict()
    expected = a.next_batch()
    b = RandomWindowBatcher(view, 4, 16, seed=3)
    b.load_state_dict(saved)
    assert torch.equal(b.next_batch().inputs, expected.inputs)
    whole = RandomWindowBatcher(view, 4, 16, seed=5).next_batch().inputs
    halves = [RandomWindowBatcher(view, 2, 16, seed=5, rank=r, world_size=2).next_batch().inputs for r in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)


def test_random_windows_reject_short_data():
    with pytest.raises(ValueError, match="fewer than seq_len"):
        RandomWindowBatcher(synthetic_view(lengths=(10,)), 2, 16, seed=0)


def _read_rows(batcher, n_batches):
    """Per row: the predictions (input, target) seen, and the segments where it reset."""
    rows = [[] for _ in range(batcher.batch_size)]
    for _ in range(n_batches):
        batch = batcher.next_batch()
        for r in range(batcher.batch_size):
            valid = batch.targets[r] != IGNORE_INDEX
            rows[r].append((bool(batch.reset[r]), batch.inputs[r][valid], batch.targets[r][valid], valid))
    return rows


def test_streaming_walks_documents_in_segments_and_resets_at_boundaries():
    view = synthetic_view()
    batcher = StreamingBatcher(view, 2, 64, seed=0, shuffle=False, loop=False)
    docs_seen = []
    for row in _read_rows(batcher, 40):
        current = None
        for reset, inputs, targets, valid in row:
            if reset:
                if current is not None:
                    docs_seen.append(current)
                current = [[], []]
            if current is None:
                continue
            # the valid part of a segment is a prefix: padding only after a document ends
            assert bool(valid[: int(valid.sum())].all())
            current[0].append(inputs)
            current[1].append(targets)
        if current is not None and current[0]:
            docs_seen.append(current)
    # each document with >= 2 tokens is read whole, once, inputs and targets shifted by one
    full = {tuple(view.tokens[view.doc_offsets[i]:view.doc_offsets[i + 1]].tolist())
            for i in range(view.n_documents) if view.doc_offsets[i + 1] - view.doc_offsets[i] >= 2}
    got = set()
    for inputs, targets in docs_seen:
        x, y = torch.cat(inputs), torch.cat(targets)
        if len(x) == 0:
            continue
        assert torch.equal(x[1:], y[:-1])
        got.add(tuple(x.tolist()) + (int(y[-1]),))
    assert got == full
    assert batcher.exhausted


def test_streaming_rank_shards_and_resume():
    view = synthetic_view()
    whole = StreamingBatcher(view, 4, 32, seed=7)
    parts = [StreamingBatcher(view, 2, 32, seed=7, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(30):
        expected = whole.next_batch()
        got = [p.next_batch() for p in parts]
        assert torch.equal(torch.cat([g.inputs for g in got]), expected.inputs)
        assert torch.equal(torch.cat([g.reset for g in got]), expected.reset)
    saved = whole.state_dict()
    expected = [whole.next_batch().targets for _ in range(5)]
    again = StreamingBatcher(view, 4, 32, seed=7)
    again.load_state_dict(saved)
    assert all(torch.equal(again.next_batch().targets, e) for e in expected)
    with pytest.raises(ValueError, match="stream rows"):
        StreamingBatcher(view, 3, 32).load_state_dict(saved)


def test_streamed_state_matches_whole_document_and_resets():
    """Carrying the state across segments gives the logits of one call over the document, and a
    reset row behaves like a fresh stream (the model never sees the previous document)."""
    config = StrideHybridConfig.tiny(vocab_size=64, attention_impl="dense")
    model = StrideHybridModel(config).eval()
    view = synthetic_view(lengths=(70, 40))
    batcher = StreamingBatcher(view, 1, 16, shuffle=False, loop=False)
    state = model.init_state(1)
    seen, logits_by_doc = [], []
    with torch.no_grad():
        while not batcher.exhausted:
            batch = batcher.next_batch()
            state = state.reset_rows(batch.reset).detach()
            logits, aux = model(batch.inputs, state=state)
            state = aux["state"]
            if batch.reset[0]:
                seen.append([])
                logits_by_doc.append([])
            n = int((batch.targets[0] != IGNORE_INDEX).sum())
            seen[-1].append(batch.inputs[0, :n])
            logits_by_doc[-1].append(logits[0, :n])
        for doc_index, (inputs, logits) in enumerate(zip(seen, logits_by_doc)):
            start, end = view.doc_offsets[doc_index], view.doc_offsets[doc_index + 1] - 1
            document = torch.from_numpy(view.tokens[start:end].astype(np.int64))
            assert torch.equal(torch.cat(inputs), document)
            reference, _ = model(document[None])
            torch.testing.assert_close(torch.cat(logits), reference[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["random", "stream"])
def test_eval_batches_cover_every_prediction_once(mode):
    view = synthetic_view()
    total = sum(b.n_targets for b in eval_batches(view, 3, 32, mode))
    # random: every next token of the corpus; stream: within documents (L - 1 per document)
    expected = len(view) - 1 if mode == "random" else len(view) - view.n_documents
    assert total == expected
    sharded = sum(b.n_targets for r in (0, 1) for b in eval_batches(view, 2, 32, mode, r, 2))
    assert sharded == total


def test_as_view_checks_and_cuts():
    view = synthetic_view()
    cut = as_view(view, max_tokens=320)
    assert len(cut) == 320 and cut.doc_offsets[-1] == 320 and cut.n_words is None
    with pytest.raises(ValueError, match="at least 2"):
        as_view(synthetic_view(lengths=(1,)))
    with pytest.raises(TypeError, match="TokenDataset-like"):
        as_view(np.zeros(5))
    assert view.tokens[view.doc_offsets[1] - 1] == EOS
