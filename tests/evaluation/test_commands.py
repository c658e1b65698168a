"""smt eval / analyze / report on a tiny saved model with the GPT-2 tokenizer and real text."""

from __future__ import annotations

import json

import pytest
import torch

from smt import StrideHybridConfig
from smt.cli import main
from smt.model_directory import save_model_dir
from smt.models.baselines import build_model


def saved_model(tmp_path, shared_data, arch: str = "smt"):
    from smt.data import load_tokenizer

    tokenizer = load_tokenizer(shared_data / "tokenizers" / "gpt2")
    torch.manual_seed(0)
    config = StrideHybridConfig.tiny(vocab_size=tokenizer.model_vocab_size, d_model=16, n_heads=2,
                                     pooling_heads=1, arch=arch)
    directory = tmp_path / f"model_{arch}"
    save_model_dir(build_model(config), directory, tokenizer)
    return directory


def test_eval_analyze_report(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("SMT_CACHE_DIR", str(tmp_path / "cache"))
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:6000]
    data = tmp_path / "sample.txt"
    data.write_text(text, encoding="utf-8")
    model_dir = saved_model(tmp_path, shared_data)
    out = tmp_path / "run"
    assert main(["eval", "--checkpoint", str(model_dir), "--data", str(data), "--positions", "200",
                 "--passkey", "120", "--depths", "0,1", "--samples", "2", "--out", str(out / "eval")]) == 0
    result = json.loads((out / "eval" / "eval.json").read_text())
    assert result["perplexity"]["n_documents"] == 1 and result["perplexity"]["word_ppl"] > 1
    assert "at least the 90% of prose" in result["perplexity"]["word_ppl_note"]
    assert (out / "eval" / "loss_by_position.png").is_file() and (out / "eval" / "passkey_heatmap.png").is_file()
    assert len(result["passkey"]["exact"]) == 1 and len(result["passkey"]["exact"][0]) == 2
    assert main(["analyze", "--checkpoint", str(model_dir), "--text", str(data), "--out",
                 str(out / "analysis")]) == 0
    stats = json.loads((out / "analysis" / "sample.json").read_text())
    assert 0 <= stats["ssm_total"] <= 1 and abs(stats["ssm_total"] + stats["input_total"] - 1) < 1e-6
    assert len(stats["along_document"]) == 10
    assert (out / "analysis" / "pooling_window.png").is_file()
    # a later evaluation replaces only what it computes; each result says where it came from
    assert main(["eval", "--checkpoint", str(model_dir), "--passkey", "100", "--depths", "0.5", "--samples", "1",
                 "--out", str(out / "eval")]) == 0
    kept = json.loads((out / "eval" / "eval.json").read_text())
    assert kept["perplexity"] == result["perplexity"] and kept["passkey"]["context_lengths"] == [100]
    assert kept["perplexity"]["evaluated"]["data"] == str(data) and kept["passkey"]["evaluated"]["step"] is None
    assert kept["perplexity"]["evaluated"]["at"] <= kept["passkey"]["evaluated"]["at"]
    history = [json.loads(line) for line in (out / "eval" / "eval_history.jsonl").read_text().splitlines()]
    assert [sorted(k for k in h if k not in ("checkpoint", "arch")) for h in history] == [
        ["loss_by_position", "perplexity"], ["passkey"], ["passkey"]]
    assert main(["report", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    assert "## Evaluation: eval" in report and "pooling_window.png" in report
    # every nested result reaches the report, as tables
    assert "### perplexity" in report and "| token_ppl |" in report and f"on {data}" in report
    assert "### loss_by_position" in report and "| mean_first_window |" in report
    assert "### passkey" in report and "| 100 (exact) |" in report
    assert "| along_document |" in report  # the analysis' nested values too
    err = capsys.readouterr().err
    assert "perplexity" in err and "loss by position" in err and "passkey" in err  # progress bars
    # a section that fails keeps what the earlier ones wrote
    assert main(["eval", "--checkpoint", str(model_dir), "--data", str(data), "--task", "no_such_task",
                 "--out", str(out / "partial")]) == 2
    partial = json.loads((out / "partial" / "eval.json").read_text())
    assert partial["perplexity"]["n_documents"] == 1 and "task" not in partial
    assert "no_such_task" in capsys.readouterr().err


def test_analyze_says_a_uniform_pooling_is_uniform(tmp_path, shared_data, capsys):
    """The default pools tokens only: the maximum is log M (the slot half is never weighed), and a pooling
    with a zero query (every visible position weighed alike) is called uniform in plain words."""
    import math

    from smt.data import load_tokenizer

    tokenizer = load_tokenizer(shared_data / "tokenizers" / "gpt2")
    config = StrideHybridConfig.tiny(vocab_size=tokenizer.model_vocab_size, d_model=16, n_heads=2, pooling_heads=1)
    assert not config.pool_over_memory
    model = build_model(config)
    with torch.no_grad():
        model.pooling.query.zero_()
    save_model_dir(model, tmp_path / "model", tokenizer)
    data = tmp_path / "t.txt"
    data.write_text((shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:3000],
                    encoding="utf-8")
    assert main(["analyze", "--checkpoint", str(tmp_path / "model"), "--text", str(data), "--out",
                 str(tmp_path / "analysis")]) == 0
    out = capsys.readouterr().out
    stats = json.loads((tmp_path / "analysis" / "t.json").read_text())
    M, N, S = config.m_input_tokens, config.n_ssm_outputs, config.stride
    # write k sees min(M, (k + 1) S) tokens and no slot
    expected = [math.log(min(M, (k + 1) * S)) for k in range(stats["n_writes"])]
    assert stats["max_entropy"] == pytest.approx(sum(expected) / len(expected))
    assert stats["entropy"] == pytest.approx(stats["max_entropy"])
    assert stats["max_entropy"] < math.log(M) < math.log(N + M)
    assert (stats["visible_slots"], stats["visible_tokens"], stats["uniform"]) == (0, M, True)
    assert stats["along_document"][-1]["max_entropy"] == pytest.approx(math.log(M))
    assert (f"of at most {stats['max_entropy']:.3f} nats (a uniform pooling over the {M} tokens a write can "
            "weigh)") in out
    assert "(this model pools tokens only)" in out
    assert "the pooling is uniform: it has not learned to pick positions" in out
    assert stats["pooling"].startswith("the pooling is uniform")


def test_analyze_refuses_a_model_without_memory(tmp_path, shared_data, capsys):
    data = tmp_path / "t.txt"
    data.write_text("Some words to read. " * 20, encoding="utf-8")
    model_dir = saved_model(tmp_path, shared_data, arch="swa")
    assert main(["analyze", "--checkpoint", str(model_dir), "--text", str(data)]) == 2
    assert "no memory writes" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(model_dir)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_eval_compares_several_runs_in_one_table_and_chart(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("SMT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "sample.txt"
    data.write_text((shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:3000],
                    encoding="utf-8")
    runs = [saved_model(tmp_path, shared_data, arch) for arch in ("smt", "swa")]
    out = tmp_path / "cmp"
    assert main(["eval", "--checkpoint", *map(str, runs), "--data", str(data), "--positions", "100",
                 "--recall-split", "2", "--passkey", "80", "--depths", "0,1", "--samples", "1",
                 "--out", str(out)]) == 0
    table = (out / "compare.md").read_text()
    assert "| metric | model_smt | model_swa |" in table and "| arch | smt | swa |" in table
    for row in ("| perplexity.loss |", "| loss_by_position.mean_first_window |", "| passkey.mean_exact |",
                "| recall_split.all.mean_loss |", "| parameters |"):
        assert row in table
    assert table in capsys.readouterr().out
    both = json.loads((out / "compare.json").read_text())
    for name, run in zip(("model_smt", "model_swa"), runs):
        own = json.loads((run / "eval" / "eval.json").read_text())  # each run keeps its own results
        assert both[name]["perplexity"]["loss"] == own["perplexity"]["loss"]
    assert both["model_smt"]["perplexity"]["loss"] != both["model_swa"]["perplexity"]["loss"]
    for png in ("loss_by_position.png", "recall_split.png", "passkey_heatmap.png"):
        assert (out / png).is_file() and f"]({png})" in table


def test_word_perplexity_only_on_prose(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("SMT_CACHE_DIR", str(tmp_path / "cache"))
    code = tmp_path / "code.jsonl"
    modules = (shared_data / "code" / "valid.jsonl").read_text(encoding="utf-8").splitlines()[1:4]
    code.write_text("\n".join(json.dumps({"text": json.loads(m)["text"][:2500]}) for m in modules), encoding="utf-8")
    model_dir = saved_model(tmp_path, shared_data)
    assert main(["eval", "--checkpoint", str(model_dir), "--data", str(code), "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "eval.json").read_text())["perplexity"]
    assert "word_ppl" not in result and "n_words" not in result and result["token_ppl"] > 1
    assert result["word_ppl_note"].startswith("not reported: ") and "of prose" in result["word_ppl_note"]
    assert "no word perplexity" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(model_dir), "--data", str(code), "--word-ppl", "always",
                 "--out", str(tmp_path / "b")]) == 0
    forced = json.loads((tmp_path / "b" / "eval.json").read_text())["perplexity"]
    assert forced["word_ppl"] > forced["token_ppl"] and forced["loss"] == result["loss"]
