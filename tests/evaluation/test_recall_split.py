"""The loss split by n-gram hit distance: hand-made sequences, the accumulation, and `smt eval --recall-split`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smt.cli import main
from smt.evaluation.recall_split import NO_HIT, RecallSplit, bucket_names, default_edges, hit_distances, recall_split
from tests.evaluation.test_commands import saved_model


def test_bigram_hits_point_at_the_latest_earlier_occurrence():
    #        0  1  2  3  4  5  6  7  8
    tokens = [5, 6, 7, 5, 6, 9, 5, 6, 7]
    # the bigram (5, 6) ends at 1, 4 and 7: token 4 hits 3 back, token 7 hits 3 back (the latest, not 6)
    # (6, 7) ends at 2 and 8: token 8 hits 6 back; every other bigram is new
    assert hit_distances(tokens, 2).tolist() == [NO_HIT, NO_HIT, NO_HIT, NO_HIT, 3, NO_HIT, NO_HIT, 3, 6]


def test_unigram_and_trigram_hits():
    tokens = [1, 2, 1, 1, 2, 3, 1, 2, 3]
    assert hit_distances(tokens, 1).tolist() == [NO_HIT, NO_HIT, 2, 1, 3, NO_HIT, 3, 3, 3]
    # trigrams: (1,2,1)@2 (2,1,1)@3 (1,1,2)@4 (1,2,3)@5 (2,3,1)@6 (3,1,2)@7 (1,2,3)@8 -> 8 hits 5 at 3 back
    assert hit_distances(tokens, 3).tolist() == [NO_HIT] * 8 + [3]


def test_repeats_of_one_token_overlap():
    assert hit_distances([4, 4, 4, 4], 2).tolist() == [NO_HIT, NO_HIT, 1, 1]
    assert hit_distances([], 2).tolist() == []


def test_bad_n_and_edges_are_named():
    with pytest.raises(ValueError, match="n >= 1"):
        hit_distances([1, 2], 0)
    with pytest.raises(ValueError, match="increasing"):
        RecallSplit(2, [32, 16])
    with pytest.raises(ValueError, match="increasing"):
        RecallSplit(2, [0, 5])


def test_losses_are_filed_under_the_hit_distance_of_the_predicted_token():
    tokens = [5, 6, 7, 5, 6, 9, 5, 6, 7]  # hits: token 4 -> 3, token 7 -> 3, token 8 -> 6
    nll = np.arange(1, 9, dtype=np.float64)  # nll[i] predicts token i + 1
    split = RecallSplit(2, [2, 4])
    split.add(tokens, nll)
    result = split.result()
    assert list(result["buckets"]) == ["hit 1-2", "hit 3-4", "hit 5+", "no hit"]
    assert result["buckets"]["hit 1-2"] == {"tokens": 0, "share": 0.0, "mean_loss": None}
    # tokens 4 and 7 (predictions 3 and 6, losses 4 and 7) hit 3 back; token 8 (loss 8) hits 6 back
    assert result["buckets"]["hit 3-4"] == {"tokens": 2, "share": 0.25, "mean_loss": 5.5}
    assert result["buckets"]["hit 5+"]["mean_loss"] == 8.0
    assert result["buckets"]["no hit"]["mean_loss"] == pytest.approx(np.mean([1, 2, 3, 5, 6]))
    assert result["all"]["tokens"] == 8 and result["all"]["mean_loss"] == pytest.approx(4.5)
    assert sum(b["share"] for b in result["buckets"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one per predicted token"):
        split.add(tokens, nll[:-1])


def test_edges_default_to_the_window_reach_and_name_their_buckets():
    assert default_edges(14) == [14, 56, 224]
    assert bucket_names([32, 192]) == ["hit 1-32", "hit 33-192", "hit 193+"]


def test_recall_split_of_a_model_on_documents(tmp_path, shared_data):
    """On a dataset of two documents that repeat their text, the split counts the repeats as far hits; a
    model's buckets average the same per-token losses that stream_nll gives."""
    from smt.evaluation.streaming import stream_nll
    from smt.models import load_model

    model = load_model(saved_model(tmp_path, shared_data))
    rng = np.random.default_rng(0)
    first = rng.integers(0, 500, 60)
    docs = [np.concatenate([first, first]), rng.integers(0, 500, 40)]

    class Dataset:
        tokens = np.concatenate(docs)
        doc_offsets = np.array([0, 120, 160])

    result = recall_split(model, Dataset(), n=2, edges=[30, 59])
    # the second copy of doc 0: its tokens 61..119 complete bigrams seen exactly 60 back
    assert result["buckets"]["hit 60+"]["tokens"] >= 59
    expected = stream_nll(model, docs[0], 512)[60:]
    assert result["buckets"]["hit 60+"]["mean_loss"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert result["all"]["tokens"] == 119 + 39


def test_smt_eval_recall_split_writes_json_plot_and_report(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("SMT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "code.txt"
    data.write_text(("def f(x):\n    return x + 1\n\n" * 40), encoding="utf-8")
    model_dir = saved_model(tmp_path, shared_data)
    out = tmp_path / "run" / "eval"
    assert main(["eval", "--checkpoint", str(model_dir), "--data", str(data), "--positions", "300",
                 "--recall-split", "2", "--recall-edges", "8,64", "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    split = result["recall_split"]
    assert split["n"] == 2 and split["edges"] == [8, 64] and (out / "recall_split.png").is_file()
    # a repeated line of about ten tokens: after its first copy every bigram hits one line back
    assert split["buckets"]["hit 9-64"]["tokens"] > 250 and split["buckets"]["hit 65+"]["tokens"] == 0
    assert split["all"]["tokens"] == 300
    assert split["all"]["mean_loss"] == pytest.approx(float(np.mean(np.load(out / "loss_by_position.npy"))),
                                                      rel=1e-5)
    # without --positions: whole documents, the model's own reach as edges
    assert main(["eval", "--checkpoint", str(model_dir), "--data", str(data), "--recall-split", "3",
                 "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "eval.json").read_text())["recall_split"]
    assert whole["streams"] == "whole documents" and whole["n"] == 3
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "Loss by 2-gram hit distance" in (tmp_path / "run" / "REPORT.md").read_text()


def test_recall_split_needs_text(tmp_path, shared_data, capsys):
    assert main(["eval", "--checkpoint", str(saved_model(tmp_path, shared_data)), "--task", "passkey",
                 "--recall-split", "2", "--out", str(tmp_path / "o")]) == 2
    assert "--recall-split" in capsys.readouterr().err
