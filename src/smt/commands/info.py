"""`smt info [PATH] [--preset NAME] [--json]`: what a run, checkpoint, model directory or preset is.

    smt info runs/x              a run: its model (config, parameters), training (steps, tokens seen,
                                 best and last validation loss), checkpoints and evaluations
    smt info runs/x/checkpoints/step_000400   a step directory, or a model directory (save_pretrained)
    smt info --preset small      a preset's configuration and parameter counts
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("info", help="describe a run, checkpoint, model directory or preset",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", default=None, metavar="PATH",
                        help="a run, checkpoints/, step or model directory (default: describe --preset)")
    parser.add_argument("--preset", default=None, help="wikitext103 (default without PATH), pg19, small or tiny")
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    parser.set_defaults(run=run)


def parameter_counts(config) -> dict:
    """count_parameters() of the model a config builds, on the meta device (no memory, no init time)."""
    import torch

    from smt.models.baselines import build_model

    with torch.device("meta"):
        model = build_model(config.replace(device="cpu"))
    if callable(getattr(model, "count_parameters", None)):
        return model.count_parameters()
    return {"total": sum(p.numel() for p in model.parameters())}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _training_facts(run_dir: Path) -> dict:
    """Steps, tokens seen and validation losses from metrics.jsonl (what the trainer logged)."""
    file = run_dir / "metrics.jsonl"
    records = []
    for line in file.read_text(encoding="utf-8").splitlines() if file.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") == "valid" and isinstance(r.get("loss"), (int, float))]
    facts: dict = {}
    if train:
        facts.update(steps=train[-1].get("step"), tokens_seen=train[-1].get("tokens_seen"),
                     last_train_loss=train[-1].get("loss"))
    if valid:
        best = min(valid, key=lambda r: r["loss"])
        facts.update(best_valid_loss=best["loss"], best_valid_step=best.get("step"),
                     last_valid_loss=valid[-1]["loss"], last_valid_step=valid[-1].get("step"))
    return facts


def _evaluations(run_dir: Path) -> dict:
    """A line per result in RUN/eval/eval.json (smt eval): its headline and the step it is of."""
    data = _read_json(run_dir / "eval" / "eval.json") or {}
    found = {}
    for key, entry in data.items():
        if not isinstance(entry, dict):
            continue
        stamp = entry.get("evaluated") if isinstance(entry.get("evaluated"), dict) else {}
        line = f"loss {entry['loss']:.4f}, token ppl {entry['token_ppl']:.4g}" if key == "perplexity" else "present"
        step = stamp.get("step")
        found[key] = line + (f" (step {step})" if step is not None else "") + (
            f" on {stamp['data']}" if stamp.get("data") else "")
    return found


def describe(path: str | Path) -> dict:
    """The facts about a run, checkpoints/, step or model directory, and its model config."""
    from smt.model_directory import read_config
    from smt.training.checkpoint import list_checkpoints, resolve_checkpoint

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"smt info: {path} is not a directory (a run, checkpoints/, step or model directory)")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path
    run_dir = run_dir.parent if run_dir.name == "checkpoints" else run_dir
    facts: dict = {"path": str(path)}
    try:
        directory = resolve_checkpoint(path)
    except FileNotFoundError:
        directory = None
    if directory is not None:
        facts["model_directory"] = str(directory)
        config = read_config(directory)
        record = _read_json(directory / "training.json")
        if record:
            facts["checkpoint_step"] = record.get("step")
    elif (run_dir / "config.yaml").is_file():
        from smt.training.run_config import load_run_config

        facts["model_directory"] = None  # a run that has not saved a checkpoint yet
        config = load_run_config(run_dir / "config.yaml").model
    else:
        raise FileNotFoundError(f"{path} holds no model: expected a run directory (config.yaml, checkpoints/), a "
                                "step directory or a model directory (config.json + model.safetensors)")
    facts["config"] = config
    facts["parameters"] = parameter_counts(config)
    facts.update(_training_facts(run_dir))
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if checkpoints:
        facts["checkpoints"] = [p.name for p in checkpoints]
        best = _read_json(run_dir / "checkpoints" / "best.json")
        if best:
            facts["best_checkpoint"] = best
    evaluations = _evaluations(run_dir)
    if evaluations:
        facts["evaluations"] = evaluations
    return facts


def _print_facts(facts: dict) -> None:
    facts["config"].summary()
    counts = facts["parameters"]
    print(f"\nparameters: {counts['total']:,}" + "".join(f"; {k} {v:,}" for k, v in counts.get("breakdown", {}).items()
                                                    if isinstance(v, int)))
    labels = {"model_directory": "model directory", "checkpoint_step": "checkpoint step", "steps": "steps trained",
              "tokens_seen": "tokens seen", "last_train_loss": "last train loss", "best_valid_loss": "best valid loss",
              "best_valid_step": "  at step", "last_valid_loss": "last valid loss", "last_valid_step": "  at step",
              "checkpoints": "checkpoints", "best_checkpoint": "best checkpoint", "evaluations": "evaluations"}
    for key, label in labels.items():
        value = facts.get(key)
        if value is None:
            continue
        if key == "evaluations":
            print("evaluations (smt eval):", *(f"  {k}: {v}" for k, v in value.items()), sep="\n")
            continue
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value)
        print(f"{label}: {value}")
    if "steps" not in facts and facts.get("checkpoint_step") is None:
        print("training: none recorded here (a model directory, or a run without metrics.jsonl)")


def run(args: argparse.Namespace) -> int:
    from smt import StrideHybridConfig

    if args.path is not None and args.preset is not None:
        raise ValueError("give a PATH or --preset, not both")
    if args.path is None:
        config = StrideHybridConfig.preset(args.preset or "wikitext103")
        facts = {"preset": args.preset or "wikitext103", "config": config, "parameters": parameter_counts(config)}
    else:
        facts = describe(args.path)
    if args.json:
        print(json.dumps({**facts, "config": facts["config"].to_dict()}, indent=2, default=str))
    elif args.path is None:
        facts["config"].summary()
        print(json.dumps(facts["parameters"], indent=2))
    else:
        _print_facts(facts)
    return 0
