import json
import math
import shutil

import pytest
import torch

from smt.commands.train import train_from_config
from smt.model_directory import CheckpointError
from smt.training.checkpoint import list_checkpoints, verify_checkpoint
from smt.training.distributed import DistContext
from smt.training.run_config import load_run_config
from smt.training.trainer import NonFiniteError, Trainer
from tests.training.helpers import synthetic_view, tiny_config

BOOK = "gutenberg/train/pg1342-pride-and-prejudice.txt"


def book_config(tmp_path, shared_data, **training):
    text = (shared_data / BOOK).read_text(encoding="utf-8")
    (tmp_path / "train.txt").write_text(text[:120_000], encoding="utf-8")
    (tmp_path / "valid.txt").write_text(text[200_000:215_000], encoding="utf-8")
    values = {"batch_size": 8, "seq_len": 64, "max_steps": 100, "lr": 3e-3, "warmup_steps": 10,
              "eval_interval": 50, "eval_batches": 4, "checkpoint_interval": 50, "log_interval": 10,
              **training}
    return load_run_config(None, {
        "model": {"preset": "tiny", "vocab_size": 512},
        "training": values,
        "run": {"train_data": str(tmp_path / "train.txt"), "valid_data": str(tmp_path / "valid.txt"),
                "tokenizer": str(tmp_path / "tokenizer"), "tokenizer_vocab_size": 512,
                "cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "run"),
                "progress": False, "tensorboard": False},
    })


def test_tiny_smt_learns_a_gutenberg_book(tmp_path, shared_data):
    config = book_config(tmp_path, shared_data)
    result = train_from_config(config)
    first = sum(result.losses[s] for s in range(1, 6)) / 5
    last = sum(result.losses[s] for s in range(96, 101)) / 5
    assert first > math.log(512) - 0.5  # starts near chance
    assert last < first - 1.5, (first, last)  # a real drop, in nats per token
    assert result.final_eval["complete"] and result.final_eval["loss"] < first - 1.0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "loss_curve.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert {"loss", "ppl", "tokens_per_s", "lr", "grad_norm"} <= set(train_records[-1])
    valid = [r for r in records if r["split"] == "valid"][-1]
    assert valid["word_ppl"] > valid["ppl"]  # a word is more than one BPE token
    assert load_run_config(run / "config.yaml").to_dict() == config.to_dict()
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert (run / "checkpoints" / best["step_dir"] / "tokenizer.json").is_file()


def test_token_cache_is_reused(tmp_path, shared_data):
    from smt.training.data_setup import prepare_data, prepare_tokenizer

    config = book_config(tmp_path, shared_data)
    tokenizer = prepare_tokenizer(config.run)
    prepare_data(config.run, tokenizer, progress=False)
    caches = sorted((tmp_path / "cache").iterdir())
    stamps = {p: (p / "tokens.bin").stat().st_mtime_ns for p in caches if (p / "tokens.bin").exists()}
    again = prepare_tokenizer(config.run)  # loaded from run.tokenizer, not retrained
    assert again.fingerprint() == tokenizer.fingerprint()
    train, _ = prepare_data(config.run, again, progress=False)
    assert sorted((tmp_path / "cache").iterdir()) == caches
    assert {p: (p / "tokens.bin").stat().st_mtime_ns for p in stamps} == stamps
    assert len(train) > 1000


@pytest.mark.parametrize("batching", ["random", "stream"])
def test_resume_gives_the_same_losses(tmp_path, batching):
    view = synthetic_view()
    straight = Trainer(tiny_config(tmp_path / "a", batching), view, view).train()
    interrupted = Trainer(tiny_config(tmp_path / "b", batching), view, view).train(stop_after=8)
    assert max(interrupted.losses) == 8  # the checkpoint is at step 6: steps 7-8 are redone
    resumed = Trainer(tiny_config(tmp_path / "b", batching), view, view).train(resume=True)
    assert sorted(resumed.losses) == list(range(7, 13))
    assert [resumed.losses[s] for s in range(7, 13)] == [straight.losses[s] for s in range(7, 13)]
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [json.loads(x)["step"] for x in
                                                     (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("batching", ["random", "stream"])
def test_data_seed_fixes_the_data_order_across_model_seeds(tmp_path, batching):
    view = synthetic_view()

    def first_inputs(**training):
        batcher = Trainer(tiny_config(tmp_path, batching, **training), view, view)._make_batcher(DistContext())
        return [batcher.next_batch().inputs for _ in range(3)]

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    assert not same(first_inputs(seed=1), first_inputs(seed=2))  # the seed alone moves both
    assert same(first_inputs(seed=1, data_seed=5), first_inputs(seed=2, data_seed=5))
    assert same(first_inputs(seed=5), first_inputs(seed=2, data_seed=5))  # data_seed means the seed's order
    assert not same(first_inputs(seed=1, data_seed=5), first_inputs(seed=1, data_seed=6))


def test_resume_refuses_a_different_data_seed(tmp_path):
    view = synthetic_view()
    Trainer(tiny_config(tmp_path, max_steps=6), view, view).train()
    with pytest.raises(CheckpointError, match="data_seed: checkpoint None vs config 3"):
        Trainer(tiny_config(tmp_path, data_seed=3), view, view).train(resume=True)


def test_resume_refuses_a_different_model(tmp_path):
    view = synthetic_view()
    Trainer(tiny_config(tmp_path, max_steps=6), view, view).train()
    changed = tiny_config(tmp_path)
    changed.model = changed.model.replace(d_model=32, n_heads=2)
    with pytest.raises(ValueError, match=r"step_000006.*(d_model|does not fit)"):
        Trainer(changed, view, view).train(resume=True)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny_config(tmp_path), synthetic_view()).train(resume=True)


class PoisonedTrainer(Trainer):
    """Makes the loss of chosen optimizer steps NaN (counted by forward calls)."""

    def __init__(self, *args, bad_steps=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.bad_steps, self.calls = set(bad_steps), 0

    def _forward(self, model, batch, state):
        nll, auxiliary, state = super()._forward(model, batch, state)
        if model.training:
            self.calls += 1
            if self.calls in self.bad_steps:
                nll = nll * float("nan")
        return nll, auxiliary, state


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    view = synthetic_view()
    trainer = PoisonedTrainer(tiny_config(tmp_path, max_steps=12), view, view, bad_steps={8})
    with pytest.raises(NonFiniteError, match=r"step 8.*step_000006"):
        trainer.train()
    saved = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in saved] == ["step_000006"]
    verify_checkpoint(saved[0])  # intact


def test_nonfinite_loss_skip_policy_skips_the_step(tmp_path, capsys):
    view = synthetic_view()
    result = PoisonedTrainer(tiny_config(tmp_path, nonfinite="skip"), view, view, bad_steps={4}).train()
    assert result.skipped_steps == [4]
    assert 4 not in result.losses and all(math.isfinite(v) for v in result.losses.values())
    assert "step 4" in capsys.readouterr().err


def test_vocab_mismatch_is_refused(tmp_path):
    view = synthetic_view(vocab=64)
    config = tiny_config(tmp_path)
    config.model = config.model.replace(vocab_size=32)
    with pytest.raises(ValueError, match="64 tokens but model.vocab_size is 32"):
        Trainer(config, view)


def test_stream_segments_must_align_with_stride(tmp_path):
    with pytest.raises(ValueError, match="multiple of model.stride"):
        Trainer(tiny_config(tmp_path, "stream", seq_len=30), synthetic_view())


@pytest.mark.parametrize("problem", ["missing", "empty", "latin1"])
def test_bad_data_gives_clear_errors(tmp_path, shared_data, problem):
    config = book_config(tmp_path, shared_data)
    bad = tmp_path / "bad.txt"
    if problem == "empty":
        bad.write_bytes(b"")
    elif problem == "latin1":
        bad.write_bytes("caf\u00e9 au lait ".encode("latin-1") * 20)
    config.run.train_data = str(bad)
    config.run.tokenizer_vocab_size = None
    config.run.tokenizer = str(shared_data / "tokenizers" / "gpt2")
    config.model = config.model.replace(vocab_size=50264)
    expected = {"missing": "not found.*bad.txt", "empty": "bad.txt is empty",
                "latin1": "bad.txt is not valid utf-8.*byte offset 3"}[problem]
    error = FileNotFoundError if problem == "missing" else ValueError
    with pytest.raises(error, match=expected):
        train_from_config(config)


def test_tokenizer_larger_than_model_is_refused(tmp_path, shared_data):
    config = book_config(tmp_path, shared_data)
    config.run.tokenizer_vocab_size = None
    config.run.tokenizer = str(shared_data / "tokenizers" / "gpt2")
    with pytest.raises(ValueError, match=r"50257 tokens but model.vocab_size is 512.*50264"):
        train_from_config(config)
    assert torch.get_num_threads() >= 1


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler (the flag is optional)")
@pytest.mark.slow
def test_compile_flag_trains_like_eager(tmp_path):
    view = synthetic_view()
    eager = Trainer(tiny_config(tmp_path / "eager", max_steps=3, eval_interval=3, checkpoint_interval=3),
                    view, view).train()
    compiled = Trainer(tiny_config(tmp_path / "compiled", max_steps=3, eval_interval=3, checkpoint_interval=3,
                                   compile=True), view, view).train()
    assert sorted(compiled.losses) == [1, 2, 3]
    for step, loss in eager.losses.items():
        assert math.isclose(compiled.losses[step], loss, rel_tol=1e-4), (step, compiled.losses[step], loss)


def test_float16_trains_with_a_loss_scaler_that_resumes(tmp_path):
    """training.dtype float16 (GPUs without bf16): autocast to float16 with a GradScaler, whose
    scale is saved with the optimizer and restored on resume; the loss still falls."""
    view = synthetic_view()
    result = Trainer(tiny_config(tmp_path, dtype="float16", max_steps=12), view, view).train()
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    saved = torch.load(tmp_path / "checkpoints" / "step_000012" / "optimizer.pt", weights_only=True)
    assert saved["grad_scaler"]["scale"] > 0
    resumed = Trainer(tiny_config(tmp_path, dtype="float16", max_steps=14), view, view)
    run = resumed._setup(DistContext(), resume=True)
    assert run.scaler.is_enabled() and run.scaler.get_scale() == saved["grad_scaler"]["scale"]
    (tmp_path / "fp32").mkdir()
    float32 = Trainer(tiny_config(tmp_path / "fp32", max_steps=1), view, view)
    assert not float32._setup(DistContext(), resume=False).scaler.is_enabled()


def _word_level_tokenizer(words):
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))


@pytest.mark.parametrize("kind", ["prose", "code"])
def test_word_perplexity_is_logged_for_prose_only(tmp_path, kind, capsys):
    words, more = {"prose": (["the", "cat", "sat", "on", "mat", "and", "it's", "well-known", "dog"], "s"),
                   "code": (["x[0]", "self.f(", "==", "def", "return", "a.b", "f(x):", "1", "_y"], "_")}[kind]
    tokenizer = _word_level_tokenizer(["<eos>", *[w + more * k for k in range(8) for w in words][:63]])
    view = synthetic_view()
    Trainer(tiny_config(tmp_path, max_steps=6), view, view, tokenizer=tokenizer).train()
    valid = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "valid"]
    assert valid and all(("word_ppl" in r) == (kind == "prose" and r.get("complete", True)) for r in valid)
    assert any("word_ppl" in r for r in valid) == (kind == "prose")
    assert ("no word perplexity for this validation text" in capsys.readouterr().out) == (kind == "code")


def test_training_warns_when_the_warmup_is_the_whole_run(tmp_path, capsys):
    view = synthetic_view()
    Trainer(tiny_config(tmp_path / "a", max_steps=4, warmup_steps=4), view).train()
    assert "warmup_steps=4 is not shorter than the run's 4 steps" in capsys.readouterr().err
    Trainer(tiny_config(tmp_path / "b", max_steps=4, warmup_steps=2), view).train()
    assert "warmup_steps" not in capsys.readouterr().err


@pytest.mark.parametrize("model", [{"preset": "tiny"}, {"preset": "tiny", "vocab_size": 1024}])
def test_model_vocabulary_comes_from_the_tokenizer_unless_given(tmp_path, shared_data, capsys, model):
    book = book_config(tmp_path, shared_data, max_steps=2, warmup_steps=1, eval_interval=2, checkpoint_interval=2)
    data = book.to_dict()
    data["model"] = model
    config = load_run_config(None, data)
    assert config.vocab_size_given == ("vocab_size" in model)
    train_from_config(config)
    err = capsys.readouterr().err
    saved = load_run_config(tmp_path / "run" / "config.yaml")
    if "vocab_size" in model:  # kept as given, with a word on the rows no token trains
        assert saved.model.vocab_size == 1024 and saved.vocab_size_given
        assert "model.vocab_size=1024 but the tokenizer has 512 tokens: 512 embedding rows will never" in err
    else:  # the tiny preset's 256 would not even fit the tokenizer's 512
        assert saved.model.vocab_size == 512
        assert "model.vocab_size: 512, from the tokenizer (512 tokens" in err and "warning" not in err
