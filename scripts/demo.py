#!/usr/bin/env python
"""The demo: memory beyond the window, on a laptop CPU, with nothing downloaded.

Default (synthetic passkey): trains a tiny SMT and the sliding-window baseline with the same
window M and the same parameter budget (smt.training's Trainer, seeded batches), then prints a
side-by-side accuracy table by key depth, writes the passkey heatmap and the attention-pooling
picture, and generates the answer for one prompt with the trained SMT. The key sits up to 30
tokens before the question: beyond the window transformer's reach (layers x (M - 1) tokens),
so only the memory can carry it.

With --data PATH (a text file or directory): trains both models on that text (a byte-level BPE
is trained on it first), prints their validation loss, and generates text from the SMT.

    python scripts/demo.py [--steps 1200] [--out runs/demo] [--data FILE_OR_DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from smt import StrideHybridConfig, TrainingConfig
from smt.evaluation.passkey import (
    KEY_MARK,
    QUERY_MARK,
    passkey_grid,
    plot_passkey_heatmap,
    synthetic_passkey,
)
from smt.evaluation.tasks import TaskConfig
from smt.evaluation.train_task import train_task
from smt.models.baselines import matched_baseline
from smt.models.components.attention_pooling import AttentionPoolingAnalyzer
from smt.training.run_config import FullConfig, RunConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model")
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per training row (synthetic task)")
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--data", default=None, help="train on this text file/directory instead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baselines", nargs="+", default=["swa"], choices=["swa", "gpt", "mamba"],
                        help="baselines trained beside SMT on the synthetic task (same parameter budget)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


def symbols(ids) -> str:
    """Readable synthetic tokens: K = key marker, ? = question, digits = key symbols, letters = filler."""
    out = []
    for i in ids:
        i = int(i)
        out.append("K" if i == KEY_MARK else "?" if i == QUERY_MARK else str(i - 2) if i < 10 else "abcd"[(i - 10) % 4])
    return "".join(out)


def synthetic_demo(args: argparse.Namespace, out: Path) -> int:
    task = TaskConfig(name="passkey", seq_len=args.seq_len, key_length=1, n_values=8, n_filler=4)
    smt_config = StrideHybridConfig.tiny(vocab_size=16, ssm_type="simple")
    labels = {"swa": "SWA (same window, no memory)", "gpt": "GPT (full attention)", "mamba": "Mamba only"}
    configs = {"SMT": smt_config}
    configs.update({labels[arch]: matched_baseline(smt_config, arch) for arch in args.baselines})
    training = TrainingConfig(batch_size=32, seq_len=args.seq_len, lr=3e-3, warmup_steps=50, min_lr_ratio=0.1,
                              weight_decay=0.0, max_steps=args.steps, log_interval=100,
                              checkpoint_interval=10**9, seed=args.seed)
    print(f"task: passkey, one key symbol of {task.n_values} hidden in a {args.seq_len}-token context, "
          f"asked at the end (chance {task.chance:.3f})")
    print(f"window: M={smt_config.m_input_tokens} tokens, N={smt_config.n_ssm_outputs} slots, stride "
          f"S={smt_config.stride}; the window transformer reaches about layers x (M-1) tokens back\n")
    results, models = {}, {}
    for name, config in configs.items():
        started = time.perf_counter()
        run = RunConfig(output_dir=str(out / config.arch), progress=False, tensorboard=False)
        result = train_task(FullConfig(config, training, run), task, eval_samples=64)
        results[name], models[name] = result.evaluation, result.model
        print(f"trained {name}: {config.n_layers} transformer layers, {result.evaluation['parameters']:,} "
              f"parameters, {args.steps} steps in {time.perf_counter() - started:.0f} s, final train loss "
              f"{result.train.losses[max(result.train.losses)]:.3f}")
    names = list(results)
    depths = list(results[names[0]]["by_depth"])
    context = results[names[0]]["context_length"]
    print(f"\npasskey exact-match accuracy by key depth (64 held-out prompts each; chance {task.chance:.3f})")
    print(f"{'depth':>6} {'key distance':>13} " + " ".join(f"{n:>30}" for n in names))
    for depth in depths:
        distance = context - 1 - (round(depth * (context - task.key_length - 2)) + 1)
        print(f"{depth:>6.2f} {distance:>13} " + " ".join(f"{results[n]['by_depth'][depth]['exact']:>30.2f}" for n in names))
    print(f"{'all':>6} {'':>13} " + " ".join(f"{results[n]['exact']:>30.2f}" for n in names))

    def make(length: int, depth: float, generator: torch.Generator):
        return synthetic_passkey(length, depth, generator, task.key_length, task.n_values, task.n_filler)

    grids = {n.split(" ")[0]: passkey_grid(models[n], make, [16, 24, args.seq_len], [0.0, 0.25, 0.5, 0.75, 1.0],
                                           n_samples=32, seed=args.seed) for n in names}
    heatmap = plot_passkey_heatmap(grids, out / "passkey_heatmap.png")
    smt = models[names[0]]
    sample = make(args.seq_len, 0.0, torch.Generator().manual_seed(args.seed + 99))
    with torch.no_grad():
        _, aux = smt(sample.input_ids[None])
    analyzer = AttentionPoolingAnalyzer.from_config(smt.config)
    picture = analyzer.visualize_attention(aux["attention_weights_per_head"], out / "pooling_attention.png")
    stats = analyzer.analyze_attention(aux["attention_weights_per_head"])
    generated = smt.generate(sample.input_ids[None], max_new_tokens=task.key_length, temperature=0.0)
    answer = symbols(generated[0, len(sample.input_ids):])
    print(f"\ngeneration with the trained SMT (K = key marker, ? = question, letters = filler):\n"
          f"  prompt : {symbols(sample.input_ids)}\n  answer : {answer}   (true key: {symbols(sample.answer)})")
    print(f"\nattention pooling on that prompt: {stats['ssm_total']:.1%} of the weight on memory slots, "
          f"entropy {stats['entropy']:.2f} of {stats['max_entropy']:.2f} nats")
    print(f"pictures: {picture}, {heatmap}")
    summary = {name: {k: v for k, v in r.items() if k != "task_config"} for name, r in results.items()}
    (out / "demo_results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


def text_demo(args: argparse.Namespace, out: Path) -> int:
    from smt.commands.train import train_from_config
    from smt.data import load_tokenizer

    tokenizer_dir = out / "tokenizer"
    smt_config = StrideHybridConfig.tiny(vocab_size=2048, d_model=128, n_layers=2, n_heads=4, m_input_tokens=32,
                                         n_ssm_outputs=4, stride=8, ssm_type="simple")
    configs = {"SMT": smt_config}
    configs.update({arch.upper(): matched_baseline(smt_config, arch) for arch in args.baselines})
    # a folder with train/ and valid/ (like ../shared/data/gutenberg) is evaluated on its held-out
    # valid/ documents; anything else on its last 10% of documents
    data = Path(args.data)
    held_out = (data / "train").is_dir() and (data / "valid").is_dir()
    splits = (dict(train_split="train", valid_data=args.data, valid_split="valid") if held_out
              else dict(valid_fraction=0.1))
    training = TrainingConfig(batch_size=8, seq_len=128, lr=2e-3, warmup_steps=50, max_steps=args.steps,
                              eval_interval=max(args.steps, 1), eval_batches=20, log_interval=50,
                              checkpoint_interval=10**9, seed=args.seed)
    losses = {}
    for name, config in configs.items():
        started = time.perf_counter()
        run = RunConfig(train_data=args.data, **splits, tokenizer=str(tokenizer_dir), tokenizer_vocab_size=2048,
                        max_train_tokens=2_000_000, max_valid_tokens=50_000, output_dir=str(out / f"text_{config.arch}"),
                        progress=False, tensorboard=False, full_final_eval=False)
        result = train_from_config(FullConfig(config, training, run))
        losses[name] = result.final_eval
        print(f"trained {name} on {args.data}: {args.steps} steps in {time.perf_counter() - started:.0f} s, "
              f"validation loss {result.final_eval['loss']:.3f} (ppl {result.final_eval['ppl']:.1f})")
    from smt.evaluation.train_task import load_trained_model

    tokenizer = load_tokenizer(tokenizer_dir)
    model = load_trained_model(out / "text_smt" / "checkpoints" / f"step_{args.steps:06d}")
    prompt = "The"
    ids = torch.tensor([tokenizer.encode(prompt)])
    text = tokenizer.decode(model.generate(ids, max_new_tokens=80, temperature=0.8, top_p=0.95, seed=args.seed)[0])
    print(f"\nSMT sample:\n{text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    code = text_demo(args, out) if args.data else synthetic_demo(args, out)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs in {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
