"""`smt generate --checkpoint DIR --prompt "..."`: sample from a trained checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, where it has one (not for required options and switches)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def add_parser(sub) -> None:
    parser = sub.add_parser("generate", help="sample text from a trained checkpoint",
                            description="DIR is a run directory (its best checkpoint, else the latest), "
                                        "a checkpoints/ directory, a step directory, or a model directory "
                                        "(config.json + model.safetensors + tokenizer.json).",
                            formatter_class=DefaultsShown)
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="run, checkpoints/, step or model directory (with tokenizer.json)")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=100,
                        help="tokens to generate after the prompt (fewer when the end-of-text token comes)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="sampling temperature; 0 is greedy decoding")
    parser.add_argument("--top_k", "--top-k", type=int, default=None,
                        help="sample among the k likeliest tokens only (None: all)")
    parser.add_argument("--top_p", "--top-p", type=float, default=0.95,
                        help="sample among the likeliest tokens whose probabilities sum to p (nucleus sampling)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the sampling (None: unseeded)")
    parser.add_argument("--num_samples", "--num-samples", type=int, default=1,
                        help="continuations of the prompt, generated as one batch")
    parser.add_argument("--latest", action="store_true",
                        help="use the latest checkpoint of a run, not the best")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.set_defaults(run=run)


def load_trained(path: str | Path, prefer_best: bool = True, device: str = "cpu"):
    """(model in eval mode, tokenizer, step directory) from a run/checkpoint/model directory; the
    tokenizer must be there and fit the model."""
    from smt.commands.eval import load_for_eval

    model, tokenizer, directory = load_for_eval(path, device, prefer_best)
    tokenizer_file = directory / "tokenizer.json"
    if tokenizer is None:
        raise FileNotFoundError(f"{tokenizer_file} is missing: the checkpoint has no tokenizer; copy the "
                                "run's tokenizer.json into it")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"{tokenizer_file} has {tokenizer.vocab_size} tokens but the model in {directory} has "
                         f"vocab_size {model.config.vocab_size}: the tokenizer does not belong to this model")
    return model, tokenizer, directory


def check_prompt(prompt: str) -> None:
    """A lone surrogate (argv bytes that were not UTF-8, kept by Python as U+DC80..U+DCFF) cannot be
    tokenized; say so rather than the tokenizer's 'TextInputSequence must be str'."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"--prompt: character {error.start} ({prompt[error.start]!r}) is a lone surrogate, not "
                         "text (the argument held bytes that are not UTF-8); pass the prompt as UTF-8") from None


def run(args: argparse.Namespace) -> int:
    import torch

    check_prompt(args.prompt)
    model, tokenizer, directory = load_trained(args.checkpoint, not args.latest, args.device)
    if args.num_samples < 1:
        raise ValueError(f"--num_samples {args.num_samples}: generate at least one sample")
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens; pass some text with --prompt")
    input_ids = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=model.device)
    with torch.no_grad():
        output = model.generate(input_ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, eos_token_id=tokenizer.eos_id,
                                seed=args.seed)
    print(f"# {directory}")
    for row in output:
        print(args.prompt + tokenizer.decode(row[len(ids):]))
        print("---")
    return 0
