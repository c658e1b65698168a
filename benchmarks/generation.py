"""Generation: per-token latency and state bytes at growing stream lengths, up to 1M tokens.

SMT and the sliding-window baseline (SWA, SMT's window without the memory) are advanced through
the lengths in long chunks fed in parallel (model(chunk, state=...)), one stream per model, its
state copied at each length; their states have a fixed size, so a step costs the same at any
position. SMT's decode over SWA's is the memory's cost per generated token. The full-attention
baseline is prefilled to each length in one call (its KV cache grows with it), up to
`max_gpt_length` (where its quadratic prefill still fits the time budget). Then every stream of
every model takes its single-token steps in turns (SMT's, SWA's and full attention's, all lengths), timed
in runs of SMT's stride, so each timed run holds one memory write (the per-token cost, writes included).

    OMP_NUM_THREADS=2 python -m benchmarks.generation --lengths 1024 16384 131072 1048576
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import (
    autocast,
    bench_config,
    build,
    markdown_table,
    state_nbytes,
    synchronize,
)
from smt.models.components.stream_state import StreamState


def advance(model, length: int, vocab: int, chunk: int, device, generator: torch.Generator, state=None):
    """The stream `state` (None: a new one) `length` tokens further, fed `chunk` tokens per call;
    returns (last logits, state)."""
    logits, fed = None, 0
    while fed < length:
        n = min(chunk, length - fed)
        ids = torch.randint(0, vocab, (1, n), generator=generator).to(device)
        logits, aux = model(ids, state=state)
        state, fed = aux["state"], fed + n
    return logits[:, -1], state


def copy_state(state: StreamState) -> StreamState:
    return StreamState(state.position.clone(), {k: v.clone() for k, v in state.buffers.items()})


def prepare_streams(arch: str, lengths, dtype: str, size: str = "small", device: str = "cpu",
                    chunk: int = 4096, seed: int = 0) -> tuple[torch.nn.Module, dict[int, list], dict[int, dict]]:
    """One model of `arch` and one stream per length, advanced to it: (model, {length: [next token,
    state, samples]}, {length: row with prefill_s and state_bytes})."""
    torch.manual_seed(seed)
    config = bench_config(size, device, arch=arch)
    model = build(config).eval()
    generator = torch.Generator().manual_seed(seed)
    streams, rows = {}, {}
    with torch.inference_mode(), autocast(dtype, device):
        state, fed = None, 0
        for length in sorted(lengths):
            start = time.perf_counter()
            if arch == "gpt":  # prefilled in one call per length (its chunked calls would cost the same)
                logits, stream_state = advance(model, length, config.vocab_size, length, device, generator)
            else:  # one stream carried through the lengths, a copy kept at each
                logits, state = advance(model, length - fed, config.vocab_size, chunk, device, generator, state)
                fed, stream_state = length, copy_state(state)
            rows[length] = {"arch": arch, "length": length, "dtype": dtype,
                            "prefill_s": time.perf_counter() - start, "state_bytes": state_nbytes(stream_state)}
            streams[length] = [logits.argmax(-1), stream_state, []]
    return model, streams, rows


def step_in_turns(prepared: dict[str, tuple], dtype: str, device: str = "cpu", turns: int = 20,
                  warmup: int = 3, tokens_per_sample: int = 16) -> dict[str, dict[int, dict]]:
    """Every stream of every model (`prepare_streams`' results by arch) takes its single-token steps in
    turns, so machine noise hits every model and length alike. In a turn a stream takes one untimed step
    (otherwise the stream after full attention's 16K step, which sweeps a 134 MB cache through memory,
    would be timed with nothing of its own in cache), then `tokens_per_sample` timed steps, one sample:
    SMT's stride, so every sample holds exactly one of its memory writes and a sample's mean is the
    per-token cost of decoding, writes included. Rows gain the median over the turns of the ms per
    greedy token, and the state bytes after the steps."""
    with torch.inference_mode(), autocast(dtype, device):
        for turn in range(warmup + turns):
            for model, streams, _ in prepared.values():
                for stream in streams.values():
                    token, state, samples = stream
                    logits, state = model.step(token, state)
                    token = logits.argmax(-1)
                    synchronize(device)
                    start = time.perf_counter()
                    for _ in range(tokens_per_sample):
                        logits, state = model.step(token, state)
                        token = logits.argmax(-1)
                    synchronize(device)
                    if turn >= warmup:
                        samples.append((time.perf_counter() - start) / tokens_per_sample)
                    stream[0], stream[1] = token, state
    results = {}
    for arch, (_, streams, rows) in prepared.items():
        for length, (_, state, samples) in streams.items():
            samples.sort()
            rows[length].update(ms_per_token=samples[len(samples) // 2] * 1e3, state_bytes_after=state_nbytes(state))
        results[arch] = rows
    return results


def run(lengths=(1024, 16384, 131072), dtypes=("float32", "bfloat16"), size: str = "small",
        device: str = "cpu", max_gpt_length: int = 16384, chunk: int = 4096, turns: int = 20) -> list[dict]:
    rows = []
    for dtype in dtypes:
        gpt_lengths = [n for n in lengths if n <= max_gpt_length]
        prepared = {arch: prepare_streams(arch, arch_lengths, dtype, size, device, chunk)
                    for arch, arch_lengths in (("smt", lengths), ("swa", lengths), ("gpt", gpt_lengths))}
        stride = prepared["smt"][0].config.stride
        measured = step_in_turns(prepared, dtype, device, turns, tokens_per_sample=stride)
        smt_rows, swa_rows, gpt_rows = measured["smt"], measured["swa"], measured["gpt"]
        base = smt_rows[min(lengths)]
        for length in lengths:
            row = smt_rows[length]
            row["latency_vs_shortest"] = row["ms_per_token"] / base["ms_per_token"]
            row["same_state_bytes"] = row["state_bytes"] == base["state_bytes"] == row["state_bytes_after"]
            row["vs_swa"] = row["ms_per_token"] / swa_rows[length]["ms_per_token"]
            if length in gpt_rows:
                row["speedup_vs_gpt"] = gpt_rows[length]["ms_per_token"] / row["ms_per_token"]
            rows.append(row)
        rows.extend(swa_rows.values())
        rows.extend(gpt_rows.values())
    return rows


def with_targets(rows: list[dict]) -> list[dict]:
    """Latency at the longest length within 1.1x of the shortest; decode within 1.2x of SWA's at
    every length; >= 5x faster than gpt at 16K."""
    longest = max((r["length"] for r in rows if r["arch"] == "smt"), default=None)
    for row in rows:
        if row["arch"] != "smt":
            continue
        if row["length"] == longest:
            row["meets_flat_latency"] = row["latency_vs_shortest"] <= 1.1
        if "vs_swa" in row:
            row["meets_vs_swa"] = row["vs_swa"] <= 1.2
        if row["length"] == 16384 and "speedup_vs_gpt" in row:
            row["meets_vs_gpt"] = row["speedup_vs_gpt"] >= 5.0
    return rows


COLUMNS = ["dtype", "length", "arch", "ms_per_token", "state_bytes", "prefill_s", "latency_vs_shortest",
           "same_state_bytes", "vs_swa", "speedup_vs_gpt", "meets_flat_latency", "meets_vs_swa", "meets_vs_gpt"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 16384, 131072, 1048576])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--size", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-gpt-length", type=int, default=16384)
    args = parser.parse_args(argv)
    rows = with_targets(run(args.lengths, args.dtypes, args.size, args.device, args.max_gpt_length))
    print(markdown_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
