"""The lm-evaluation-harness adapter (`--model smt`, `smt evaluate`) on a tiny model trained here for
a few seconds on four sentences, with local YAML tasks over JSONL files (nothing is downloaded)."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smt.cli import main

SENTENCES = ["The cat sat on the mat.", "The dog ran in the park.", "A bird sang in the tree.",
             "My friend read a book."]
QUESTIONS = [("The cat sat on", 0), ("The dog ran in", 1), ("A bird sang in", 2), ("My friend read", 3)]
CHOICES = ["the mat.", "the park.", "the tree.", "a book."]
DOCUMENT = " ".join(SENTENCES[i % 4] for i in (0, 2, 1, 3, 2, 0, 3, 1) * 5)  # ~300 tokens: several segments
PPL_DOCS = [DOCUMENT, "A bird sang in the park. The cat read a book.", "The dog."]


def _yaml(name: str, data: Path, cache: Path, body: str) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"  cache_dir: {cache}\ntest_split: test\n{body}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model directory (a tiny SMT that learned the four sentences, and its tokenizer) and a
    directory of two tasks: multiple choice (finish the sentence) and perplexity (rolling)."""
    from smt import StrideHybridConfig
    from smt.data import train_bpe_tokenizer
    from smt.model_directory import save_model_dir
    from smt.models.baselines import build_model

    root = tmp_path_factory.mktemp("lm_eval")
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(SENTENCES * 10), encoding="utf-8")
    tokenizer = train_bpe_tokenizer([corpus], vocab_size=300)
    torch.manual_seed(0)
    rng = random.Random(0)
    # the seed's design (pooling over memory, ungated): what these tests check is the adapter, and its
    # trained text puts the stop string of the generate_until test beyond the first 16-token chunk
    config = StrideHybridConfig.tiny(vocab_size=tokenizer.model_vocab_size, d_model=32, n_heads=2, pooling_heads=1,
                                     pool_over_memory=True, write_gate=False)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):  # the sentences in random orders, each row after an eos (about 4 s)
        rows = [[tokenizer.eos_id] + tokenizer.encode(" ".join(rng.sample(SENTENCES, 4)))[:31] for _ in range(8)]
        x = torch.tensor(rows)
        logits, _ = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model_dir = root / "model"
    save_model_dir(model.eval(), model_dir, tokenizer)

    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "mc.jsonl").write_text("\n".join(json.dumps({"prompt": q, "choices": CHOICES, "label": label})
                                              for q, label in QUESTIONS), encoding="utf-8")
    (tasks / "ppl.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in PPL_DOCS), encoding="utf-8")
    metric = "    aggregation: {}\n    higher_is_better: {}\n"
    (tasks / "mc.yaml").write_text(_yaml("smt_test_mc", tasks / "mc.jsonl", root / "hf_cache", (
        'output_type: multiple_choice\ndoc_to_text: "{{prompt}}"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n' + metric.format("mean", "true"))),
        encoding="utf-8")
    (tasks / "ppl.yaml").write_text(_yaml("smt_test_ppl", tasks / "ppl.jsonl", root / "hf_cache", (
        'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n'
        + "".join(f"  - metric: {m}\n" + metric.format(agg, "false") for m, agg in
                  [("word_perplexity", "weighted_perplexity"), ("byte_perplexity", "weighted_perplexity"),
                   ("bits_per_byte", "bits_per_byte")]))), encoding="utf-8")
    return {"model_dir": model_dir, "tasks": tasks, "tokenizer": tokenizer, "root": root}


def _adapter(setup, **kwargs):
    from smt.evaluation.lm_eval_adapter import SMTLM

    return SMTLM(pretrained=str(setup["model_dir"]), **kwargs)


def _instance(kind: str, *args):
    from lm_eval.api.instance import Instance

    return Instance(kind, {}, tuple(args), 0)


def test_registered_under_smt():
    from lm_eval.api.registry import get_model

    from smt.evaluation.lm_eval_adapter import SMTLM

    assert get_model("smt") is SMTLM


def test_rolling_equals_the_streamed_nll_of_smt_eval(setup, tmp_path, monkeypatch):
    from smt.evaluation.streaming import stream_nll

    monkeypatch.setenv("SMT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "doc.txt"
    data.write_text(DOCUMENT, encoding="utf-8")
    assert main(["eval", "--checkpoint", str(setup["model_dir"]), "--data", str(data), "--segment-len", "64",
                 "--out", str(tmp_path / "eval")]) == 0
    smt_eval = json.loads((tmp_path / "eval" / "eval.json").read_text())["perplexity"]
    ids = setup["tokenizer"].encode(DOCUMENT)
    assert len(ids) > 4 * 64  # streamed over several segments
    lm = _adapter(setup, segment_len=64)
    [rolling] = lm.loglikelihood_rolling([_instance("loglikelihood_rolling", DOCUMENT)], disable_tqdm=True)
    assert rolling == pytest.approx(-smt_eval["nll_sum"], rel=1e-9)
    assert smt_eval["n_tokens"] == len(ids)  # as many tokens scored as the text has
    # the stream does not depend on how it is cut (no windows): one call, or 37 tokens per call
    for segment_len in (37, 4096):
        [other] = _adapter(setup, segment_len=segment_len).loglikelihood_rolling(
            [_instance("loglikelihood_rolling", DOCUMENT)], disable_tqdm=True)
        assert other == pytest.approx(rolling, rel=1e-5)
    # lm_eval's convention: eos as the context, every token of the text scored, no eos after it
    [prefixed] = _adapter(setup, segment_len=64, rolling="eos_prefix").loglikelihood_rolling(
        [_instance("loglikelihood_rolling", DOCUMENT)], disable_tqdm=True)
    eos = setup["tokenizer"].eos_id
    expected = -float(stream_nll(lm.model, np.array([eos] + ids), 64).astype(np.float64).sum())
    assert prefixed == pytest.approx(expected, rel=1e-9) and abs(prefixed - rolling) > 1e-3
    assert lm.loglikelihood_rolling([_instance("loglikelihood_rolling", "")], disable_tqdm=True) == [0.0]


def _reference_loglikelihood(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """One forward over the whole request, no state, no batch."""
    whole = torch.tensor([context + continuation])
    with torch.no_grad():
        logits, _ = model(whole[:, :-1])
    log_probs = torch.log_softmax(logits[0, len(context) - 1 :].double(), -1)
    target = torch.tensor(continuation)
    return float(log_probs.gather(-1, target[:, None]).sum()), bool((log_probs.argmax(-1) == target).all())


def test_loglikelihood_equals_one_forward_per_request(setup):
    lm = _adapter(setup, batch_size=2, segment_len=16)
    tokenizer = setup["tokenizer"]
    long_context = tokenizer.encode(" ".join(SENTENCES * 3))  # longer than a segment
    prompt = tokenizer.encode("The cat sat on")
    greedy = lm.model.generate(torch.tensor([prompt]), max_new_tokens=3, temperature=0)[0, len(prompt):].tolist()
    token_requests = [((), prompt, greedy), ((), prompt, greedy[:1]), ((), prompt, [greedy[0], (greedy[1] + 1) % 300]),
                      ((), long_context, tokenizer.encode(" The dog")), ((), prompt, tokenizer.encode(" the tree."))]
    got = lm._loglikelihood_tokens(token_requests, disable_tqdm=True)
    for (_, context, continuation), (logprob, is_greedy) in zip(token_requests, got):
        ref_logprob, ref_greedy = _reference_loglikelihood(lm.model, context, continuation)
        assert logprob == pytest.approx(ref_logprob, abs=1e-4) and is_greedy == ref_greedy
    assert [g for _, g in got[:3]] == [True, True, False]
    # through lm_eval's text interface: shared contexts, an empty context (eos), several batches
    texts = [(q, " " + c) for q, _ in QUESTIONS[:2] for c in CHOICES] + [("", "The cat sat")]
    results = lm.loglikelihood([_instance("loglikelihood", *pair) for pair in texts], disable_tqdm=True)
    for (context, continuation), (logprob, is_greedy) in zip(texts, results):
        context_ids = tokenizer.encode(context) if context else [tokenizer.eos_id]
        whole = tokenizer.encode(context + continuation) if context else context_ids + tokenizer.encode(continuation)
        ref = _reference_loglikelihood(lm.model, context_ids, whole[len(context_ids):])
        assert logprob == pytest.approx(ref[0], abs=1e-4) and is_greedy == ref[1]
    best = [max(range(4), key=lambda c: results[4 * q + c][0]) for q in range(2)]
    assert best == [0, 1]  # the model learned its sentences


def test_generate_until_stops_at_the_until_string(setup, monkeypatch):
    lm = _adapter(setup)
    tokenizer = setup["tokenizer"]
    context = "The cat sat on"
    prompt = tokenizer.encode(context)
    one_call = lm.model.generate(torch.tensor([prompt]), max_new_tokens=40, temperature=0)[0, len(prompt):].tolist()
    reference = tokenizer.decode(one_call[: one_call.index(tokenizer.eos_id)] if tokenizer.eos_id in one_call
                                 else one_call)
    # the stop string: the first word of the model's text that starts past the first 16-token chunk
    words = re.findall(r"[a-z]+", reference)
    starts = {word: len(tokenizer.encode(reference[: reference.index(word)])) for word in words}
    stop = next(word for word in words if starts[word] > 16)
    assert starts[stop] <= 32

    def generate(until, max_gen_toks=40, **extra):
        return lm.generate_until([_instance("generate_until", context, {"until": until, "max_gen_toks": max_gen_toks,
                                                                        **extra})], disable_tqdm=True)[0]

    assert generate([]) == reference  # chunks of 16 tokens with the state carried == one generate call
    asked = []
    original = lm.model.generate
    monkeypatch.setattr(lm.model, "generate", lambda *a, **k: asked.append(k["max_new_tokens"]) or original(*a, **k))
    text = generate([stop, "nothing like this"], max_gen_toks=500)
    assert text == reference[: reference.index(stop)] and len(text) < len(reference)
    assert sum(asked) <= 32  # stopped after the chunk that holds the stop string (found past the first chunk)
    assert generate(".") == reference[: reference.index(".")] == " the mat"
    assert generate(["\n"], max_gen_toks=3) == tokenizer.decode(one_call[:3])
    sampled = generate([], do_sample=True, temperature=1.0, seed=3)
    assert sampled == generate([], do_sample=True, temperature=1.0, seed=3)


def test_smt_evaluate_runs_both_tasks(setup, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["evaluate", "--tasks", "smt_test_mc,smt_test_ppl", "--model", str(setup["model_dir"]),
                 "--include-path", str(setup["tasks"]), "--out", str(out), "--segment-len", "64"]) == 0
    printed = capsys.readouterr().out
    assert "smt_test_mc" in printed and "word_perplexity" in printed and str(out) in printed
    results = json.loads(out.read_text())["results"]
    assert results["smt_test_mc"]["acc,none"] == 1.0  # every sentence finished right
    lm = _adapter(setup, segment_len=64)
    rolling = lm.loglikelihood_rolling([_instance("loglikelihood_rolling", d) for d in PPL_DOCS], disable_tqdm=True)
    words = sum(len(re.split(r"\s+", d)) for d in PPL_DOCS)
    n_bytes = sum(len(d.encode("utf-8")) for d in PPL_DOCS)
    ppl = results["smt_test_ppl"]
    assert ppl["word_perplexity,none"] == pytest.approx(math.exp(-sum(rolling) / words), rel=1e-9)
    assert ppl["bits_per_byte,none"] == pytest.approx(-sum(rolling) / n_bytes / math.log(2), rel=1e-9)
    assert main(["evaluate", "--tasks", "smt_test_mc", "--model", str(setup["model_dir"]), "--include-path",
                 str(setup["tasks"]), "--limit", "2", "--out", str(tmp_path / "two.json")]) == 0
    assert json.loads((tmp_path / "two.json").read_text())["n-samples"]["smt_test_mc"]["effective"] == 2


def test_smt_evaluate_without_lm_eval_says_how_to_install(setup, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now fails
    assert main(["evaluate", "--tasks", "smt_test_mc", "--model", str(setup["model_dir"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "pip install 'stride-memory[lm-eval]'" in err


def test_smt_evaluate_offline_says_at_once_that_lm_eval_tasks_need_the_hub(setup, monkeypatch, capsys):
    import socket

    from smt.commands import evaluate

    def unreachable(address, timeout=None):
        raise OSError(101, "Network is unreachable")

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr("lm_eval.simple_evaluate", lambda **kwargs: pytest.fail("must not start the evaluation"))
    assert main(["evaluate", "--tasks", "wikitext", "--model", str(setup["model_dir"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Network is unreachable" in err and "HF_DATASETS_OFFLINE=1" in err and "--include-path" in err
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the cache is used: nothing to ask
    assert evaluate.hub_unreachable() is None


@pytest.mark.slow
def test_lm_eval_command_line_with_the_smt_model(setup, tmp_path):
    """lm_eval's own command line, run through the adapter module (which registers "smt")."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "smt.evaluation.lm_eval_adapter", "--model", "smt", "--model_args",
               f"pretrained={setup['model_dir']},segment_len=64", "--tasks", "smt_test_ppl", "--include_path",
               str(setup["tasks"]), "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [written] = list((tmp_path / "out").rglob("results_*.json"))
    ppl = json.loads(written.read_text())["results"]["smt_test_ppl"]
    lm = _adapter(setup, segment_len=64)
    rolling = lm.loglikelihood_rolling([_instance("loglikelihood_rolling", d) for d in PPL_DOCS], disable_tqdm=True)
    words = sum(len(re.split(r"\s+", d)) for d in PPL_DOCS)
    assert ppl["word_perplexity,none"] == pytest.approx(math.exp(-sum(rolling) / words), rel=1e-9)


@pytest.mark.slow
def test_plain_lm_eval_with_the_hf_model_and_remote_code(setup, tmp_path):
    """`lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True`: lm_eval's own
    command, unchanged, loads the model directory through transformers (auto_map, smt.hf) and
    scores the multiple-choice task like the smt adapter does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
               f"pretrained={setup['model_dir']},trust_remote_code=True,dtype=float32", "--tasks", "smt_test_mc",
               "--include_path", str(setup["tasks"]), "--batch_size", "1", "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [written] = list((tmp_path / "out").rglob("results_*.json"))
    accuracy = json.loads(written.read_text())["results"]["smt_test_mc"]["acc,none"]
    lm = _adapter(setup)
    requests = [_instance("loglikelihood", q, " " + c) for q, _ in QUESTIONS for c in CHOICES]
    scores = [s for s, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    expected = sum(max(range(4), key=lambda k: scores[4 * i + k]) == label for i, (_, label) in enumerate(QUESTIONS))
    assert accuracy == pytest.approx(expected / len(QUESTIONS))
