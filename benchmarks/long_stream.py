"""Process memory over a long stream: RSS at intervals while SMT reads and generates 200K tokens.

The model is the benchmark shape; the stream is fed in 512-token chunks with the state carried
(as streaming evaluation does), then continued one token at a time (as generation does).
Reports RSS at every 20K tokens, its growth after the first interval, the state's bytes, and
whether every logit stayed finite.

    python -m benchmarks.long_stream --tokens 200000
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks.common import bench_config, build


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@torch.no_grad()
def run(tokens: int = 200_000, chunk: int = 512, steps: int = 2000, size: str = "small") -> list[dict]:
    """Rows of (tokens seen, RSS MiB, state bytes); the last `steps` tokens go one at a time."""
    model = build(bench_config(size)).eval()
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    state, seen, rows, finite = None, 0, [], True
    report_every = max(chunk, tokens // 10)
    while seen < tokens - steps:
        ids = torch.randint(0, vocab, (1, min(chunk, tokens - steps - seen)), generator=generator)
        logits, aux = model(ids, state=state)
        state, seen = aux["state"], seen + ids.shape[1]
        finite &= bool(torch.isfinite(logits).all())
        if seen // report_every != (seen - ids.shape[1]) // report_every:
            rows.append({"tokens": seen, "rss_mib": rss_mib(), "state_bytes": state.nbytes(), "mode": "chunks"})
    token = torch.randint(0, vocab, (1,), generator=generator)
    for _ in range(steps):
        logits, state = model.step(token, state)
        finite &= bool(torch.isfinite(logits).all())
        token = logits.argmax(-1)
        seen += 1
    rows.append({"tokens": seen, "rss_mib": rss_mib(), "state_bytes": state.nbytes(), "mode": "steps"})
    for row in rows:
        row["all_finite"] = finite
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--size", default="small")
    args = parser.parse_args()
    rows = run(args.tokens, size=args.size)
    print("| tokens seen | mode | RSS MiB | growth since first row MiB | state bytes | all finite |")
    print("|---:|---|---:|---:|---:|---|")
    for row in rows:
        growth = row['rss_mib'] - rows[0]['rss_mib']
        print(f"| {row['tokens']:,} | {row['mode']} | {row['rss_mib']:.1f} | {growth:+.1f} "
              f"| {row['state_bytes']:,} | {row['all_finite']} |")


if __name__ == "__main__":
    main()
