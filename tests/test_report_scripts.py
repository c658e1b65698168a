"""The table scripts of issue 37 (experiments/text_report.py, robust_report.py) on hand-made result lines."""

from __future__ import annotations

import pytest

from tests.conftest import experiment_script


def text_record(model: str, seed: int, far: float, near: float = 3.0) -> dict:
    buckets = {"hit 1-32": {"tokens": 10, "share": 0.25, "mean_loss": near},
               "hit 33+": {"tokens": 10, "share": 0.25, "mean_loss": far},
               "no hit": {"tokens": 20, "share": 0.5, "mean_loss": 5.0}}
    return {"model": model, "seed": seed, "parameters": 1000, "tokens_seen": 4096, "lr": 2e-3,
            "recall_split": {"n": 2, "edges": [32], "streams": "test", "buckets": buckets,
                             "all": {"tokens": 40, "share": 1.0, "mean_loss": 4.0}},
            "loss_by_position": [5.0] * 40}


def test_text_table_gives_seed_ranges_and_the_share_of_the_gap_closed():
    report = experiment_script("text_report")
    records = [text_record("gpt", 1, 3.0), text_record("gpt", 2, 3.2), text_record("swa", 1, 4.0),
               text_record("swa", 2, 4.2), text_record("smt", 1, 3.6), text_record("smt", 2, 3.6)]
    stats = report.summary(records)
    assert stats["gpt"]["hit 33+"] == pytest.approx((3.1, 3.0, 3.2))
    assert stats["swa"]["positions 32-39"] == pytest.approx((5.0, 5.0, 5.0))
    text = report.table(records)
    assert "| hit 33+ (25% of tokens) | 3.100 [3.000-3.200] | 4.100 [4.000-4.200] | 3.600 [3.600-3.600] |" in text
    # the gap SWA - GPT is 1.0 on the far hits, SMT is 0.5 below SWA: it closes half
    assert "| hit 33+ | +1.000 | 0.200 | 0.200 | 50% |" in text


def test_text_targets_need_half_the_far_gap_and_a_lead_past_the_window_of_three_ranges():
    report = experiment_script("text_report")

    def record(model: str, seed: int, far: float, late: float) -> dict:
        r = text_record(model, seed, far)
        r["recall_split"]["edges"] = [32, 186]
        r["recall_split"]["buckets"] = {"hit 1-32": r["recall_split"]["buckets"]["hit 1-32"],
                                        "hit 33-186": {"tokens": 5, "share": 0.125, "mean_loss": 3.5},
                                        "hit 187+": {"tokens": 5, "share": 0.125, "mean_loss": far},
                                        "no hit": r["recall_split"]["buckets"]["no hit"]}
        r["loss_by_position"] = [5.0] * 32 + [late] * 8
        return r

    records = [record("gpt", 1, 3.0, 4.0), record("gpt", 2, 3.0, 4.0), record("swa", 1, 4.0, 4.5),
               record("swa", 2, 4.0, 4.52), record("smt", 1, 3.4, 4.3), record("smt", 2, 3.4, 4.3),
               record("smt_weak", 1, 3.8, 4.49), record("smt_weak", 2, 3.8, 4.49),
               record("swa-lr0.004", 1, 3.9, 4.4), record("swa-lr0.004", 2, 3.9, 4.4),
               record("smt_one", 1, 3.4, 4.3)]
    text = report.table(records)
    # SWA at another learning rate is a baseline: its share of the gap is shown, it has no target row
    assert "| swa-lr0.004 |" not in text.split("The targets")[1].split("Seed by seed")[0]
    assert "| swa-lr0.004 | s1 +0.100, s2 +0.100 | s1 +0.100, s2 +0.120 |" in text
    # smt: 60% of the far gap, 0.21 below SWA past the window against 3 x 0.02
    assert "| smt | 60% | +0.210 | 0.060 | yes | no |" in text
    assert "| smt_weak | 20% | +0.020 | 0.060 | no | no |" in text
    assert "| smt_one | 60% | +0.210 | 0.060 | -, one seed | no |" in text  # one seed is not judged
    assert "| gpt |" not in text.split("The targets")[1]
    # seed by seed against SWA's run of the same seed
    assert "| smt | s1 +0.600, s2 +0.600 | s1 +0.200, s2 +0.220 |" in text


def test_text_table_takes_one_data_order_design():
    report = experiment_script("text_report")
    own = [text_record("swa", 1, 4.0), text_record("swa", 2, 4.4)]  # order 1 and order 2
    fixed = dict(text_record("swa", 2, 4.1), data_seed=1)  # model seed 2 on order 1
    control = dict(text_record("swa-lr0.004", 1, 3.9), data_seed=1)  # made for the one-order design
    records = own + [fixed, control]
    assert report.with_data_order(records, "seed") == own
    assert report.with_data_order(records, "1") == [own[0], fixed, control]
    assert "4.050 [4.000-4.100]" in report.table(report.with_data_order(records, "1"), "1")
    # collect reads the design from the run's directory name
    assert report.run_name("smt_tokenrate_m4-s2-d1") == ("smt_tokenrate_m4", 2, 1)
    assert report.run_name("swa-s2") == ("swa", 2, None)
    assert report.run_name("swa") is None


def test_lr_sweep_table_marks_each_models_best_rate(tmp_path):
    report = experiment_script("text_report")
    for name, lr, loss in [("swa", "0.001", 5.0), ("swa", "0.004", 4.5), ("gpt", "0.001", 4.2), ("gpt", "0.004", 4.4)]:
        run = tmp_path / f"{name}-lr{lr}"
        run.mkdir()
        (run / "metrics.jsonl").write_text(
            '{"step": 10, "split": "train", "loss": 9.0}\n' + f'{{"step": 300, "split": "valid", "loss": {loss}}}\n')
    text = report.sweep_table(report.sweep_records(tmp_path))
    assert "| gpt | **4.200** | 4.400 | 0.001 |" in text and "| swa | 5.000 | **4.500** | 0.004 |" in text


def test_robust_summary_counts_seeds_that_learn_and_hold():
    report = experiment_script("robust_report")

    def record(seed: int, at_train: float, at_long: float) -> dict:
        return {"label": "v", "seed": seed, "steps": 200, "train_seconds": 10.0, "losses": [[100, 1.0], [200, 0.5]],
                "accuracy": {"64": {"2": 1.0, "61": at_train}, "896": {"2": 1.0, "893": at_long}}}

    text = report.summarize([record(1, 1.0, 1.0), record(2, 1.0, 0.5), record(3, 0.3, 0.2)])
    assert "| v | 3 | 2 / 3 | 1 / 3 (at 896) | 0.30 / 1.00 / 1.00 | 0.20 / 0.50 / 1.00 | 10 |" in text
    assert "| v | 3 | 1.000 / - / - / 0.500 | 0.30 | 0.20 | - | - |" in text
