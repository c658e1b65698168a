"""Smoke tests: every benchmark runs at toy sizes and returns well-formed rows (never timings)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import flops, generation, mfu, profiles, run_all, scaling, ssm, training
from benchmarks.common import bench_config, build, state_nbytes, time_call
from smt import kernels, native


def test_training_rows_have_ratios_against_each_baseline():
    rows = training.with_targets(training.run((64,), ("float32",), ("smt", "smt-seed", "swa"), "toy",
                                              repeats=1, warmup=0, batch=2))
    assert [r["arch"] for r in rows] == ["smt", "smt-seed", "swa"]
    for row in rows:
        assert row["tokens_per_s"] == pytest.approx(2 * 64 / row["step_s"]) and row["batch"] == 2
        assert row["page_faults_per_step"] >= 0
    smt = rows[0]
    assert smt["speedup_vs_swa"] == pytest.approx(rows[2]["step_s"] / smt["step_s"])
    assert isinstance(smt["meets_vs_swa"], bool)


def test_generation_state_bytes_do_not_grow_with_the_stream():
    rows = generation.with_targets(generation.run((16, 80), ("float32",), "toy", max_gpt_length=0,
                                                  chunk=32, turns=2))
    smt = [r for r in rows if r["arch"] == "smt"]
    assert [r["length"] for r in smt] == [16, 80]
    assert all(r["same_state_bytes"] for r in smt)
    assert smt[0]["state_bytes"] == smt[1]["state_bytes"] > 0
    assert isinstance(smt[1]["meets_flat_latency"], bool)
    swa = {r["length"]: r for r in rows if r["arch"] == "swa"}
    assert sorted(swa) == [16, 80] and swa[16]["state_bytes"] == swa[80]["state_bytes"] > 0
    assert smt[1]["vs_swa"] == pytest.approx(smt[1]["ms_per_token"] / swa[80]["ms_per_token"])
    assert isinstance(smt[1]["meets_vs_swa"], bool)


def test_generation_samples_are_runs_of_the_stride_so_each_holds_one_write():
    model, streams, _ = generation.prepare_streams("smt", (8,), "float32", "toy", chunk=8)
    stride = model.config.stride
    generation.step_in_turns({"smt": (model, streams, {8: {}})}, "float32", turns=3, warmup=1,
                             tokens_per_sample=stride)
    _, state, samples = streams[8]
    assert len(samples) == 3
    assert int(state.position[0]) == 8 + (1 + 3) * (1 + stride)  # an untimed step, then a timed run, per turn


def test_flop_count_grows_linearly_for_smt_and_quadratically_for_full_attention():
    cfg = bench_config("toy")
    smt_1, smt_2 = (flops.model_flops(cfg, t)["total"] for t in (1024, 2048))
    gpt = cfg.replace(arch="gpt")
    gpt_1, gpt_2 = (flops.model_flops(gpt, t)["attention"] for t in (1024, 2048))
    assert smt_2 == pytest.approx(2 * smt_1, rel=0.01)
    assert gpt_2 / gpt_1 == pytest.approx(4, rel=0.01)
    assert flops.model_flops(cfg, 64)["ssm"] == 6 * flops.ssm_matmul_params(cfg) * (64 // cfg.stride)


def test_mfu_rows_compare_against_a_measured_peak():
    rows = mfu.run(64, ("float32",), ("smt", "swa"), "toy", repeats=1, peak_n=64)
    assert rows[0]["peak_bf16_gflops"] > 0 and 0 < rows[0]["mfu_vs_same_dtype_peak"]
    assert rows[0]["mfu_vs_swa"] == pytest.approx(rows[0]["mfu_vs_same_dtype_peak"] / rows[1]["mfu_vs_same_dtype_peak"])
    assert rows[0]["tokens_per_s_vs_swa"] == pytest.approx(rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"])
    assert isinstance(rows[0]["meets_target"], bool)


def test_mfu_counts_the_flops_of_every_row_of_a_batch():
    one, two = (mfu.run(64, ("float32",), ("swa",), "toy", repeats=1, peak_n=64, batch=b)[0] for b in (1, 2))
    assert two["batch"] == 2 and two["model_gflop"] == pytest.approx(2 * one["model_gflop"])
    assert two["tokens_per_s"] == pytest.approx(2 * 64 / two["step_s"])


def test_default_bench_size_is_the_default_216m_config():
    from smt.config import StrideHybridConfig

    assert bench_config("default").to_dict() == StrideHybridConfig.wikitext103(device="cpu").to_dict()


def test_ssm_modes_and_speedups():
    rows = ssm.run(length=8, d_model=16, dtypes=("float32",), repeats=1)
    assert [r["mode"] for r in rows] == ["sequence", "sequence-loop", "step-loop"]
    assert rows[2]["speedup_vs_step_loop"] == 1.0
    assert rows[0]["step_ms"] > 0


def test_state_nbytes_and_timing_helpers():
    assert state_nbytes({"a": torch.zeros(2, 3), "b": [torch.zeros(4, dtype=torch.bfloat16)]}) == 24 + 8
    timing = time_call(lambda: None, "cpu", warmup=0, repeats=3)
    assert len(timing.samples) == 3 and timing.minimum <= timing.median
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, "cpu", repeats=0)
    with pytest.raises(ValueError, match="size"):
        bench_config("huge")


def test_run_all_quick_writes_report_and_json(tmp_path):
    out = tmp_path / "report.md"
    assert run_all.main(["--quick", "--only", "ssm", "mfu", "gated_scan", "--dtypes", "float32",
                         "--output", str(out)]) == 0
    text = out.read_text()
    assert "Model FLOP utilisation" in text and "sequence-loop" in text and "Machine:" in text
    assert "### Gated scan" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert {"machine", "mfu", "ssm", "gated_scan"} <= set(data)
    assert data["gated_scan"][0]["reference_s"] > 0
    with pytest.raises(ValueError, match="section"):
        run_all.run(["nonsense"])


def test_smt_bench_command_runs_quick(tmp_path, capfd):
    from smt.cli import main

    assert main(["bench", "--quick", "--only", "ssm", "--dtypes", "float32"]) == 0
    assert "Mamba block" in capfd.readouterr().out  # the benchmarks run in a subprocess: its output, fd 1


def test_long_stream_benchmark_reports_constant_state():
    from benchmarks import long_stream

    rows = long_stream.run(tokens=3000, chunk=256, steps=50, size="toy")
    assert rows[-1]["tokens"] == 3000 and rows[-1]["mode"] == "steps"
    assert len({row["state_bytes"] for row in rows}) == 1
    assert all(row["all_finite"] for row in rows) and all(row["rss_mib"] > 0 for row in rows)


@pytest.mark.slow
def test_scaling_runs_each_cell_in_a_subprocess_and_plots(tmp_path, capsys):
    png, out = tmp_path / "scaling.png", tmp_path / "scaling.json"
    assert scaling.main(["--size", "toy", "--contexts", "64", "128", "--archs", "smt", "gpt", "--max-gpt-context",
                         "64", "--repeats", "1", "--plot", str(png), "--json", str(out)]) == 0
    assert "tokens_per_s_vs_shortest" in capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {(r["arch"], r["context"]): r for r in data["rows"]}
    assert set(rows) == {("smt", 64), ("smt", 128), ("gpt", 64), ("gpt", 128)}
    assert rows["gpt", 128]["status"].startswith("not run")
    measured = [rows["smt", 64], rows["smt", 128], rows["gpt", 64]]
    for row in measured:
        assert row["status"] == "ok"
        for key in ("tokens_per_s", "peak_gib", "gib_per_1k_tokens"):
            assert math.isfinite(row[key]) and row[key] > 0
    assert rows["smt", 64]["tokens_per_s_vs_shortest"] == rows["gpt", 64]["tokens_per_s_vs_shortest"] == 1.0
    assert isinstance(rows["smt", 128]["meets"], bool) and "meets" not in rows["smt", 64]
    assert [(f["arch"], f["points"]) for f in data["memory_fit"]] == [("smt", 2)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaling_reports_a_dead_cell_as_failed():
    row = scaling.run_cell("smt", 64, size="huge", repeats=1)
    assert row["status"].startswith("failed: exit 2") and "--size" in row["status"]
    rows = [{"dtype": "float32", "arch": "smt", "context": c, "status": "ok", "peak_gib": 1 + c / 1024}
            for c in (1024, 2048, 4096)]
    fit = scaling.fit_memory(rows)[0]
    assert fit["gib_per_1k_tokens_fit"] == pytest.approx(1) and fit["intercept_gib"] == pytest.approx(1)
    assert fit["max_rel_deviation"] == pytest.approx(0, abs=1e-12)





def test_the_scan_archs_are_the_default_model_through_the_pytorch_scans():
    archs = ("smt", "smt-scan-fused", "smt-scan-ref")
    for arch in archs[1:]:
        assert training.arch_config(arch, "toy", "cpu") == training.arch_config("smt", "toy", "cpu")
    probe = torch.zeros(1)
    chosen = {}
    for arch in archs:
        with training.arch_kernels(arch):
            chosen[arch] = [kernels.choose(op, probe, 1 << 20).name for op in ("gated_scan", "gated_window")]
    assert chosen["smt-scan-fused"] == ["fused", "reference"]
    assert chosen["smt-scan-ref"] == ["reference", "reference"]
    assert chosen["smt"] == [kernels.choose(op, probe, 1 << 20).name for op in ("gated_scan", "gated_window")]
    assert math.isfinite(training.build_step("smt-scan-ref", 32, "float32", size="toy")())


def test_split_step_parts_are_the_differences_of_its_steps():
    rows = {row["part"]: row["seconds"] for row in profiles.split_step(32, size="toy", repeats=1)}
    smt, fixed, swa = rows["step: smt"], rows["step: smt, write path fixed"], rows["step: swa"]
    assert min(smt, fixed, swa) > 0
    assert rows["write path (smt - fixed)"] == pytest.approx(smt - fixed)
    assert rows["slots in the transformer (fixed - swa)"] == pytest.approx(fixed - swa)


def test_count_ops_counts_every_computing_op_of_a_step():
    """The native scans replace the chunked reference's many ops; SWA has no write path at all. A
    recurrence of 16 writes keeps the chunked reference's loops short but already visible."""
    rows = {row["arch"]: row["ops_per_step"] for row in profiles.count_ops(("smt", "smt-scan-ref", "swa"), 64,
                                                                             size="toy")}
    assert 0 < rows["swa"] < rows["smt"] < rows["smt-scan-ref"]
    counter = profiles._OpCounter()
    with counter:
        x = torch.ones(3)
        x.view(1, 3).add(1).t()
    assert counter.ops == 2  # ones and add; the views launch nothing


def test_a_fixed_write_path_runs_the_real_one_once():
    model = build(bench_config("toy"))
    calls = []
    real = model.memory.write
    model.memory.write = lambda *args: calls.append(1) or real(*args)
    profiles._fix_write_path(model)
    ids = torch.randint(0, model.config.vocab_size, (1, 33))
    for _ in range(3):
        _, aux = model(ids[:, :-1], targets=ids[:, 1:])
        aux["nll_sum"].backward()
    assert len(calls) == 1


def test_gated_scan_rows_time_the_native_and_fused_scans_against_their_reference():
    row, = ssm.gated_scan_rows(shapes=((2, 9, 6, 4),), repeats=1)
    assert row["fused_s"] > 0 and row["reference_s"] > 0
    base = row["fused_s"]
    if native.library() is not None:
        assert row["native_s"] > 0
        base = row["native_s"]
    assert row["fused_vs_native"] == pytest.approx(row["fused_s"] / base)
    assert row["reference_vs_native"] == pytest.approx(row["reference_s"] / base)


def test_training_attention_block_size_reaches_every_model(monkeypatch, capsys):
    monkeypatch.setattr(training, "CONFIG_OVERRIDES", {})
    assert training.main(["--size", "toy", "--contexts", "64", "--dtypes", "float32", "--archs", "smt", "swa",
                          "--repeats", "1", "--attention-block-size", "16"]) == 0
    assert "| smt |" in capsys.readouterr().out
    assert {training.arch_config(arch, "toy", "cpu").block_size for arch in ("smt", "smt-seed", "swa")} == {16}
    monkeypatch.setattr(training, "CONFIG_OVERRIDES", {})
    assert training.arch_config("smt", "toy", "cpu").block_size == 64
