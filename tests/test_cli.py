"""`smt` answers bad arguments and bad config files with one line naming the problem and the fix,
never a traceback (each case below gave a raw error or silently did something else before)."""

from __future__ import annotations

import pytest

from smt.cli import main


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_abbreviated_and_unknown_options_are_refused_with_suggestions(capsys):
    assert "did you mean --max_steps" in _error(capsys, ["train", "--max_step", "30", "--print-config"])
    assert "did you mean --model.stride" in _error(capsys, ["train", "--model.strid", "3", "--print-config"])
    assert "unexpected argument 'foo'" in _error(capsys, ["train", "foo", "--print-config"])


@pytest.mark.parametrize("text,message", [
    (b"model:\n  preset: tiny\n  strid: 16\n", r"'strid' -> 'stride'"),
    (b"model:\n  n_layer: 2\n", r"'n_layer' -> 'transformer_n_layers'"),
    (b"training:\n  lr: fast\n", r"lr='fast': must be a finite number"),
    (b"model: [1, 2, 3]\n", r"the model section must be a mapping"),
    (b"model:\n  d_model: 64 \xff\n", r"is not UTF-8 text"),
    (b"run:\n  outptu_dir: x\n", r"'outptu_dir' -> 'output_dir'"),
])
def test_bad_config_files_are_named(tmp_path, capsys, text, message):
    import re

    config = tmp_path / "bad.yaml"
    config.write_bytes(text)
    err = _error(capsys, ["train", "--config", str(config), "--print-config"])
    assert "bad.yaml" in err and re.search(message, err), err


def test_a_truncated_weights_file_is_named(tmp_path, capsys):
    from smt import StrideHybridConfig, StrideHybridModel
    from smt.pretrained import from_pretrained

    StrideHybridModel(StrideHybridConfig.tiny()).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "checksums.json").unlink()  # the loader's own check, not the checksum
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"model.safetensors cannot be read \(truncated or corrupted\?\)"):
        from_pretrained(tmp_path / "m")


def test_generate_refuses_zero_samples_and_nan_weights(tmp_path, capsys):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    from smt import StrideHybridConfig, StrideHybridModel

    words = ["<unk>", "the", "memory", "stride", "<|endoftext|>"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    model = StrideHybridModel(StrideHybridConfig.tiny(vocab_size=8))
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    assert "--num_samples 0" in _error(capsys, ["generate", "--checkpoint", str(tmp_path / "m"), "--prompt",
                                                "the memory", "--num_samples", "0"])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan", tokenizer=tokenizer)
    assert "NaN/inf logits" in _error(capsys, ["generate", "--checkpoint", str(tmp_path / "nan"), "--prompt",
                                               "the memory", "--max-new-tokens", "2"])


def test_train_help_gives_every_field_its_type_default_and_meaning(capsys):
    import pytest as _pytest

    with _pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("--model.position VALUE, --position VALUE one of: rope, learned, default 'rope': \"rope\" "
            "(unbounded streams)") in text
    assert "--training.lr VALUE, --lr VALUE a finite number, default" in text
    assert "--run.logger VALUE, --logger VALUE a string or a list (each item a string), default 'csv'" in text
    assert "--model.n_layers" not in text  # old names are accepted, not advertised


def test_help_promises_only_commands_that_exist(capsys):
    from smt.cli import COMMANDS

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "serve" not in text
    assert all(command in text for command in COMMANDS)


def test_info_describes_a_run_a_step_and_a_model_directory(tmp_path, capsys):
    import json

    from smt.training.trainer import Trainer
    from tests.training.helpers import synthetic_view, tiny_config

    view = synthetic_view()
    Trainer(tiny_config(tmp_path / "run", max_steps=6), view, view).train()
    assert main(["info", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if m["split"] == "train"][-1]
    best = min((m for m in metrics if m["split"] == "valid"), key=lambda m: m["loss"])
    assert "architecture      | smt" in text and f"tokens seen: {train['tokens_seen']:,}" in text
    assert "steps trained: 6" in text and f"best valid loss: {best['loss']:.4f}" in text
    assert "checkpoints: step_000006" in text and "parameters: " in text
    assert main(["info", str(tmp_path / "run" / "checkpoints" / "step_000006"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["checkpoint_step"] == 6 and facts["config"]["vocab_size"] == 64 and facts["steps"] == 6
    from smt import StrideHybridConfig, StrideHybridModel

    model = StrideHybridModel(StrideHybridConfig.tiny(vocab_size=8))
    model.save_pretrained(tmp_path / "m")
    assert main(["info", str(tmp_path / "m"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["parameters"]["total"] == model.count_parameters()["total"] and "steps" not in facts
    assert "--preset, not both" in _error(capsys, ["info", str(tmp_path / "m"), "--preset", "tiny"])
    assert "holds no model" in _error(capsys, ["info", str(tmp_path)])


def test_version(capsys):
    import smt

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"smt {smt.__version__}"


def test_every_option_takes_both_spellings(capsys):
    """`train` refused --max-steps while `eval` took --segment-len and --segment_len: now every long option
    of every command takes - and _ alike, and `--max-steps` sets what `--max_steps` sets."""
    import argparse

    from smt.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        for action in command._actions:
            for option in (o for o in action.option_strings if o.startswith("--")):
                for other in (option.replace("_", "-"), "--" + option[2:].replace("-", "_")):
                    assert command._option_string_actions[other] is action, (name, option, other)
    outputs = []
    for argv in (["--max_steps", "7", "--model.write_gate_sparsity", "0.5", "--print-config"],
                 ["--max-steps", "7", "--model.write-gate-sparsity", "0.5", "--print_config"],
                 ["--training.max-steps", "7", "--write-gate-sparsity", "0.5", "--print-config"]):
        assert main(["train", *argv]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2] and "max_steps: 7" in outputs[0]
    with pytest.raises(SystemExit):
        main(["train", "--max-steps", "7", "--max_steps", "8", "--print-config"])
    assert "training.max_steps is given twice" in capsys.readouterr().err


def _train_help(capsys) -> dict[str, str]:
    """--help's text of each `smt train` field option, one line each."""
    import re

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    entries = re.split(r"\n  (?=--)", text.split("model settings", 1)[1].split("\nexamples:", 1)[0])
    found = {}
    for entry in entries[1:]:
        first, _, rest = entry.partition("\n")
        option, *inline = re.split(r"\s{2,}", first.strip(), maxsplit=1)
        found[option.split()[0]] = " ".join(" ".join([*inline, rest]).split())
    return found


def test_train_help_explains_every_field_in_whole_sentences(capsys):
    from dataclasses import fields

    from smt import StrideHybridConfig, TrainingConfig
    from smt.training.run_config import RunConfig

    described = _train_help(capsys)
    for section, cls in (("model", StrideHybridConfig), ("training", TrainingConfig), ("run", RunConfig)):
        for field in fields(cls):
            text = described[f"--{section}.{field.name}"]
            kind_and_default, colon, meaning = text.partition(": ")
            assert colon and meaning, f"--{section}.{field.name} says only {text!r}"
            words = meaning.rstrip(").").split()
            assert not meaning.startswith("...") and words[-1] not in ("and", "or", "when", "the", "of"), text
            assert not meaning.rstrip().endswith((";", ",")), text
    memory = {name: described[f"--model.{name}"] for name in
              ("memory", "write_gate", "write_gate_sparsity", "memory_read", "stride", "n_ssm_outputs",
               "m_input_tokens", "pooling_heads", "pool_position_bias", "ssm_type", "ssm_n_layers")}
    assert "one of: gated_tokens, slot_feedback, token_rate" in memory["memory"]
    assert "token_rate feeds every token to the SSM" in memory["memory"]
    assert "one of: slots, slots+state" in memory["memory_read"] and "its own query" in memory["memory_read"]
    assert "every S tokens the window is pooled" in memory["stride"]
    assert "1e-4 with write_gate" in memory["write_gate_sparsity"]
    assert "longer streams slide the key/value cache" in described["--model.context_length"]
    assert "is missing" in described["--run.tokenizer_vocab_size"]


def test_generate_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 100)", "(default: 0.8)", "(default: 0.95)", "(default: 1)", "(default: cpu)"):
        assert default in text
    assert "greedy" in text and "(default: None)" not in text


@pytest.mark.parametrize("arch", ["gpt", "swa", "mamba"])
def test_info_describes_a_baseline_without_the_memory(tmp_path, capsys, arch):
    import json

    from smt import StrideHybridConfig
    from smt.models import build_model

    model = build_model(StrideHybridConfig.tiny(vocab_size=8, arch=arch))
    model.save_pretrained(tmp_path / "m")
    assert main(["info", str(tmp_path / "m")]) == 0
    text = capsys.readouterr().out
    assert f"| {arch} (" in text and f"parameters: {model.count_parameters()['total']:,}" in text
    assert "memory write" not in text and "attention pooling" not in text and "SSM memory" not in text
    assert main(["info", str(tmp_path / "m"), "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["arch"] == arch and "stride" not in config and "write_gate" not in config
