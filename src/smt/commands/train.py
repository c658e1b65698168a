"""`smt train --config configs/NAME.yaml [--key value ...] [--resume]`: train a model.

Every config field is also an option: `--lr 3e-4`, `--training.max_steps 200`,
`--model.d_model 256`, `--run.output_dir runs/x` (values parsed as YAML). The same command under
`torchrun --nproc_per_node=K -m smt.cli train ...` trains with DDP (or FSDP: --parallel fsdp).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import fields
from typing import Any

from smt.config import StrideHybridConfig, TrainingConfig
from smt.typed_fields import describe, field_types


def _section_fields() -> dict[str, list[str]]:
    from smt.training.run_config import RunConfig

    return {
        "model": ["preset"] + [f.name for f in fields(StrideHybridConfig)] + list(StrideHybridConfig.ALIASES),
        "training": [f.name for f in fields(TrainingConfig)],
        "run": [f.name for f in fields(RunConfig)],
    }


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "train", help="train a model from a run config (YAML) with optional overrides",
        description="Train SMT (or a baseline) from a run config with sections model/training/run. "
                    "Any field can be overridden: --section.field VALUE, or --field VALUE when the "
                    "name belongs to one section. Values are parsed as YAML. Options take - or _ between "
                    "words alike (--max-steps = --max_steps).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  smt train --config configs/cpu_gutenberg_smt.yaml --max_steps 200\n"
               "  smt train --config configs/cpu_gutenberg_smt.yaml --resume\n"
               "  torchrun --nproc_per_node=2 -m smt.cli train --config configs/wikitext103_smt.yaml",
    )
    parser.add_argument("--config", help="run config file (.yaml or .json); defaults apply without one")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="STEP_DIR",
                        help="continue from the latest checkpoint in run.output_dir, or from the one named "
                             "(e.g. --resume step_000400 when a newer one is damaged; move newer ones away first)")
    parser.add_argument("--overwrite", action="store_true",
                        help="run.output_dir holds an earlier run: delete its checkpoints and logs and start clean")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    sections = _section_fields()
    counts: dict[str, int] = {}
    for names in sections.values():
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    described = _field_help()
    for section, names in sections.items():
        group = parser.add_argument_group(f"{section} settings (--{section}.FIELD VALUE; values are YAML)")
        for name in names:
            flags = [f"--{section}.{name}"] + ([f"--{name}"] if counts[name] == 1 else [])
            text = argparse.SUPPRESS if name in StrideHybridConfig.ALIASES else described.get((section, name))
            group.add_argument(*flags, dest=f"override:{section}.{name}", metavar="VALUE",
                               default=argparse.SUPPRESS, help=text, action=_SetOnce)
    parser.set_defaults(run=run)


class _SetOnce(argparse.Action):
    """A setting given twice (--lr 1 --training.lr 2) is refused, as a duplicate key in a file is."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if hasattr(namespace, self.dest):
            parser.error(f"{option_string}: {self.dest.removeprefix('override:')} is given twice; keep one")
        setattr(namespace, self.dest, values)


def _field_help() -> dict[tuple[str, str], str]:
    """(section, field) -> "type, default D: what it is", from each config dataclass's own
    annotations and defaults (so --help cannot drift from them), and what the field means:
    smt.commands.field_help, else the comment on the field's line."""
    import inspect
    import re

    from smt.commands.field_help import FIELD_HELP
    from smt.training.run_config import RunConfig

    described = {("model", "preset"): "str: start from a named preset (wikitext103, pg19, small, tiny), "
                                      "then apply the other model fields"}
    for section, cls in (("model", StrideHybridConfig), ("training", TrainingConfig), ("run", RunConfig)):
        comments = {}
        for line in inspect.getsource(cls).splitlines():
            match = re.match(r"\s+(\w+): [^=]+=\s*.+?\s+#\s*(.+)$", line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
        types = field_types(cls)
        for f in fields(cls):
            kind = describe(types[f.name])
            default = f.default if f.default is not dataclasses.MISSING else "(computed)"
            text = f"{kind}, default {default!r}"
            meaning = FIELD_HELP.get((section, f.name), comments.get(f.name))
            described[(section, f.name)] = text + (f": {meaning}" if meaning else "")
    return {key: value.replace("%", "%%") for key, value in described.items()}


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    items = []
    for key, value in vars(args).items():
        if key.startswith("override:"):
            items += [f"--{key.removeprefix('override:')}", value]
    return items


# no --config and no model settings on a CPU: this preset instead of the default (GPU-sized) model
CPU_PRESET = "tiny"


def _cpu_sized(config, args: argparse.Namespace):
    """The config to train when no --config is given: on a CPU, with no model setting on the command
    line, the CPU_PRESET model instead of the default GPU-sized one (said in one line on stderr)."""
    if args.config is not None or any(key.startswith("override:model.") for key in vars(args)):
        return config
    device = config.training.device
    if device != "cpu":
        import torch

        if device != "auto" or torch.cuda.is_available():
            return config
    from smt.training.run_config import load_run_config

    cpu = load_run_config(None, ["--model.preset", CPU_PRESET, *overrides_from_args(args)])
    print(f"note: no --config and no model settings on a CPU: training the CPU-sized `{CPU_PRESET}` preset "
          f"(d_model {cpu.model.d_model}, {cpu.model.transformer_n_layers} transformer + {cpu.model.ssm_n_layers} SSM "
          "layers), not the default GPU-sized model (about 200M parameters); for that one pass --preset wikitext103 "
          "or a --config (configs/wikitext103_smt.yaml; configs/cpu_gutenberg_smt.yaml is a larger CPU model)",
          file=sys.stderr)
    return cpu


def run(args: argparse.Namespace) -> int:
    from smt.training.run_config import load_run_config

    config = _cpu_sized(load_run_config(args.config, overrides_from_args(args)), args)
    if args.print_config:
        sys.stdout.write(config.to_yaml())
        return 0
    result = train_from_config(config, resume=args.resume, overwrite=args.overwrite)
    if result is not None:
        summary = {"run_dir": str(result.run_dir), "steps": result.steps, "wall_s": round(result.wall_s, 1),
                   "tokens_per_s": round(result.tokens_per_s, 1),
                   "final_train_loss": result.losses.get(max(result.losses)) if result.losses else None,
                   "final_eval": result.final_eval,
                   "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
                   "skipped_steps": result.skipped_steps}
        print(json.dumps(summary, indent=2))
    return 0


def train_from_config(config, resume: bool = False, overwrite: bool = False):
    """Tokenizer, data and trainer from a FullConfig; returns the TrainResult (rank 0) or None."""
    if config.run.task is not None:
        from smt.training.train_task import train_task_from_config

        outcome = train_task_from_config(config, resume=resume, overwrite=overwrite)
        print(json.dumps(outcome.evaluation, indent=2, default=str))
        return outcome.train
    from smt.training.data_setup import fit_vocab_to_tokenizer, prepare_data, prepare_tokenizer
    from smt.training.distributed import barrier, setup_distributed, teardown_distributed
    from smt.training.trainer import Trainer

    ctx = setup_distributed(config.training.device, config.run.dist_timeout_s)
    try:
        # rank 0 trains the tokenizer / builds the token caches first; the others then reuse them
        if ctx.is_main:
            tokenizer = prepare_tokenizer(config.run, progress=config.run.progress)
            train, valid = prepare_data(config.run, tokenizer, progress=config.run.progress)
        barrier(ctx)
        if not ctx.is_main:
            tokenizer = prepare_tokenizer(config.run)
            train, valid = prepare_data(config.run, tokenizer, progress=False, report=False)
        fit_vocab_to_tokenizer(config, tokenizer, report=ctx.is_main)
        result = Trainer(config, train, valid, tokenizer, context=ctx).train(resume=resume, overwrite=overwrite)
        return result if ctx.is_main else None
    finally:
        teardown_distributed(ctx)
