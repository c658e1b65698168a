#!/usr/bin/env python
"""The demo: memory beyond the window, on a laptop CPU, with nothing downloaded.

Default (synthetic passkey with random filler): trains a tiny SMT and the sliding-window
baseline with the same window M and the same parameter budget (smt.training's Trainer, seeded
batches) at 64 tokens (4.5R, R = layers x (M - 1) = 14: the farthest a window-only model sees),
then the SMT for a few hundred steps more at 224 tokens (16R, a length curriculum). The SMT is the
library's default memory (tokens-only pooling, hard write gates with a sparsity penalty; docs/MEMORY.md,
its default); beside it the seed's design (pooling over memory slots + tokens, ungated writes), trained at
64 tokens only. Prints accuracy by key distance at 64, 224 and 896 tokens
(64R) side by side, draws accuracy vs distance and the attention-pooling picture, and generates
the answer for one prompt with the trained SMT. Beyond R only the memory can carry the key.

With --data PATH (a text file or directory): trains both models on that text (a byte-level BPE
is trained on it first), prints their validation loss, and generates text from the SMT.

    python scripts/demo.py [--steps 1200] [--out runs/demo] [--data FILE_OR_DIR] [--no-progress]

Every stage says what it does before it starts, and training shows a progress bar (with the time
per step and an estimate to the end after the first steps). The demo needs only smt's runtime
dependencies (`make demo` installs no dev extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from smt import StrideHybridConfig, TrainingConfig
from smt.evaluation.passkey import KEY_MARK, QUERY_MARK, synthetic_passkey
from smt.evaluation.pooling_analyzer import AttentionPoolingAnalyzer
from smt.evaluation.tasks import TaskConfig, key_distances, passkey_accuracy_by_distance
from smt.models.baselines import matched_baseline
from smt.training.run_config import FullConfig, RunConfig
from smt.training.train_task import train_task

SEED = "SMT, seed's design"  # pooling over memory slots + tokens, ungated writes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per training row (synthetic task)")
    parser.add_argument("--long-seq-len", type=int, default=224, help="the SMT's second curriculum stage and the "
                        "longer evaluation length (synthetic task)")
    parser.add_argument("--long-steps", type=int, default=300, help="SMT steps at --long-seq-len (0: none)")
    parser.add_argument("--far-seq-len", type=int, default=896, help="the longest evaluation length (no training)")
    parser.add_argument("--seed-design-steps", type=int, default=1500,
                        help="steps of the seed's design (pooling over memory, ungated) at --seq-len (0: leave it out)")
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--data", default=None, help="train on this text file/directory instead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baselines", nargs="+", default=["swa"], choices=["swa", "gpt", "mamba"],
                        help="baselines trained beside SMT on the synthetic task (same parameter budget)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars (the stage lines are still printed)")
    return parser.parse_args(argv)


def stage(text: str) -> None:
    """One line saying what the demo does next (flushed: the stage may take minutes)."""
    print(f"\n==> {text}", flush=True)


def symbols(ids) -> str:
    """Readable synthetic tokens: K = key marker, ? = question, digits = key symbols, letters = filler."""
    out = []
    for i in ids:
        i = int(i)
        filler = "abcdefghijklmnop"[(i - 10) % 16]
        out.append("K" if i == KEY_MARK else "?" if i == QUERY_MARK else str(i - 2) if i < 10 else filler)
    return "".join(out)


def synthetic_demo(args: argparse.Namespace, out: Path) -> int:
    task = TaskConfig(name="passkey", seq_len=args.seq_len, key_length=1, n_values=8, n_filler=16, filler="random")
    smt_config = StrideHybridConfig.tiny(vocab_size=task.vocab_size)
    reach = smt_config.window_reach
    long_len = args.long_seq_len
    labels = {"swa": "SWA (same window, no memory)", "gpt": "GPT (full attention)", "mamba": "Mamba only"}
    configs = {"SMT": smt_config}
    if args.seed_design_steps:
        configs[SEED] = smt_config.replace(pool_over_memory=True, write_gate=False, write_gate_sparsity=0.0)
    configs.update({labels[arch]: matched_baseline(smt_config, arch) for arch in args.baselines})

    def training(seq_len: int, steps: int, lr: float, warmup: int) -> TrainingConfig:
        return TrainingConfig(batch_size=32, seq_len=seq_len, lr=lr, warmup_steps=warmup, min_lr_ratio=0.1,
                              weight_decay=0.0, max_steps=steps, log_interval=100, checkpoint_interval=10**9,
                              seed=args.seed)

    print(f"task: passkey, one key symbol of {task.n_values} hidden among random filler, asked at the end "
          f"(chance {task.chance:.3f})")
    print(f"window: M={smt_config.m_input_tokens} tokens, N={smt_config.n_ssm_outputs} slots, stride "
          f"S={smt_config.stride}; a window-only model reaches R = layers x (M-1) = {reach} tokens back")
    print(f"training at {args.seq_len} tokens ({args.seq_len / reach:.1f}R); SMT then {args.long_steps} steps at "
          f"{long_len} tokens ({long_len / reach:.0f}R), a length curriculum"
          + (f"; the seed's design trains at {args.seq_len} tokens only, {args.seed_design_steps} steps"
             if args.seed_design_steps else "") + "\n")
    window_reach = max([reach] + [c.window_reach for c in configs.values() if c.arch == "swa"])
    if window_reach > reach:
        print(f"the parameter-matched SWA has more layers, so it reaches {window_reach} tokens back\n")
    models = {}
    n_stages = len(configs) + bool(args.long_steps) + 2  # the trainings, the scoring, the pictures
    done = 0
    for name, config in configs.items():
        started = time.perf_counter()
        run = RunConfig(output_dir=str(out / ("smt_seed" if name == SEED else config.arch)), progress=args.progress,
                        tensorboard=False)
        steps = args.seed_design_steps if name == SEED else args.steps
        done += 1
        stage(f"stage {done}/{n_stages}: training {name} for {steps} steps at {args.seq_len} tokens")
        result = train_task(FullConfig(config, training(args.seq_len, steps, 1e-3, 100), run), task,
                            eval_samples=16, overwrite=True)  # a demo run starts clean every time
        model = result.model
        if name == "SMT" and args.long_steps:
            done += 1
            stage(f"stage {done}/{n_stages}: training SMT on for {args.long_steps} steps at {long_len} tokens "
                  "(the length curriculum)")
            model.save_pretrained(out / "smt_short")
            run = RunConfig(output_dir=str(out / "smt_long"), progress=args.progress, tensorboard=False,
                            init_from=str(out / "smt_short"))
            long_task = TaskConfig.from_dict({**task.to_dict(), "seq_len": long_len})
            model = train_task(FullConfig(config, training(long_len, args.long_steps, 3e-4, 20), run), long_task,
                               eval_samples=16, overwrite=True).model
            steps += args.long_steps
        models[name] = model
        print(f"trained {name}: {config.transformer_n_layers} transformer layers, "
              f"{model.count_parameters()['total']:,} "
              f"parameters, {steps} steps in {time.perf_counter() - started:.0f} s")
    names = list(models)
    results = {}
    lengths = list(dict.fromkeys([args.seq_len, long_len, args.far_seq_len]))
    done += 1
    stage(f"stage {done}/{n_stages}: scoring every model on 64 held-out prompts per key distance at "
          f"{', '.join(map(str, lengths))} tokens")
    scoring = tqdm(total=len(lengths) * len(names), desc="scoring", unit="model x length", disable=not args.progress,
                   dynamic_ncols=True)
    for length in lengths:
        results[length] = {}
        for n in names:
            scoring.set_postfix_str(f"{n} at {length} tokens")
            results[length][n] = passkey_accuracy_by_distance(models[n], task, length, key_distances(length),
                                                              n_samples=64, seed=args.seed)
            scoring.update(1)
    scoring.close()
    for length in lengths:
        distances, accuracy = key_distances(length), results[length]
        print(f"\npasskey accuracy by key distance, {length}-token prompts ({length / reach:.1f}R; 64 held-out "
              f"prompts each; chance {task.chance:.3f}; R = {reach})")
        print(f"{'distance':>9} " + " ".join(f"{n:>32}" for n in names))
        for d in distances:
            mark = " (beyond every window)" if d > window_reach else " (beyond R)" if d > reach else ""
            print(f"{d:>9} " + " ".join(f"{accuracy[n][d]:>32.2f}" for n in names) + mark)

    done += 1
    stage(f"stage {done}/{n_stages}: one generation with the trained SMT, and the pictures")
    smt = models["SMT"]
    generator = torch.Generator().manual_seed(args.seed + 99)
    sample = synthetic_passkey(args.seq_len, 0.0, generator, 1, task.n_values, task.n_filler, filler="random")
    with torch.no_grad():
        _, aux = smt(sample.input_ids[None])
    analyzer = AttentionPoolingAnalyzer.from_config(smt.config)
    picture = analyzer.visualize_attention(aux["attention_weights_per_head"], out / "pooling_attention.png")
    stats = analyzer.analyze_attention(aux["attention_weights_per_head"])
    generated = smt.generate(sample.input_ids[None], max_new_tokens=1, temperature=0.0)
    answer = symbols(generated[0, len(sample.input_ids):])
    print(f"\ngeneration with the trained SMT (K = key marker, ? = question, letters = filler), key "
          f"{len(sample.input_ids) - 1 - sample.key_start} tokens back:\n"
          f"  prompt : {symbols(sample.input_ids)}\n  answer : {answer}   (true key: {symbols(sample.answer)})")
    where = "memory slots" if smt.config.pool_over_memory else "memory slots (it pools tokens only)"
    print(f"\nattention pooling on that prompt: {stats['ssm_total']:.1%} of the weight on {where}, "
          f"entropy {stats['entropy']:.2f} of {stats['max_entropy']:.2f} nats")
    plot = plot_accuracy_by_distance(results[lengths[-1]], reach, out / "passkey_by_distance.png",
                                     f"passkey recall at {lengths[-1]} tokens, random filler", window_reach)
    print(f"pictures: {picture}, {plot}")
    (out / "demo_results.json").write_text(json.dumps({"R": reach, "accuracy": results}, indent=2) + "\n",
                                           encoding="utf-8")
    return 0


def plot_accuracy_by_distance(accuracy: dict[str, dict[int, float]], reach: int, path: Path, title: str,
                              window_reach: int | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, by_distance in accuracy.items():
        ax.plot(list(by_distance), list(by_distance.values()), marker="o", label=name)
    ax.axvline(reach, color="grey", linestyle="--", label=f"R = {reach} (SMT's window reach)")
    if window_reach and window_reach != reach:
        ax.axvline(window_reach, color="grey", linestyle=":", label=f"{window_reach} (the matched SWA's reach)")
    ax.set_xscale("log")
    ax.set_xlabel("key distance (tokens before the question)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def text_demo(args: argparse.Namespace, out: Path) -> int:
    from smt.commands.train import train_from_config
    from smt.data import load_tokenizer

    tokenizer_dir = out / "tokenizer"
    smt_config = StrideHybridConfig.tiny(vocab_size=2048, d_model=128, transformer_n_layers=2, n_heads=4,
                                         m_input_tokens=32,
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
    for index, (name, config) in enumerate(configs.items(), start=1):
        started = time.perf_counter()
        run = RunConfig(train_data=args.data, **splits, tokenizer=str(tokenizer_dir), tokenizer_vocab_size=2048,
                        max_train_tokens=2_000_000, max_valid_tokens=50_000,
                        output_dir=str(out / f"text_{config.arch}"),
                        progress=args.progress, tensorboard=False, full_final_eval=False)
        first = (f" (first a 2048-id BPE is trained on {args.data} into {tokenizer_dir} and the text tokenized, "
                 "unless done before)" if index == 1 else "")
        stage(f"stage {index}/{len(configs) + 1}: training {name} on {args.data} for {args.steps} steps{first}")
        result = train_from_config(FullConfig(config, training, run), overwrite=True)
        losses[name] = result.final_eval
        print(f"trained {name} on {args.data}: {args.steps} steps in {time.perf_counter() - started:.0f} s, "
              f"validation loss {result.final_eval['loss']:.3f} (ppl {result.final_eval['ppl']:.1f})")
    from smt.models import load_model

    stage(f"stage {len(configs) + 1}/{len(configs) + 1}: a sample from the trained SMT")
    tokenizer = load_tokenizer(tokenizer_dir)
    model = load_model(out / "text_smt" / "checkpoints" / f"step_{args.steps:06d}")
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
