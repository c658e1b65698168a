"""`smt bench` runs the checkout's benchmarks in a subprocess, never importing them into smt's process."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from smt.commands import bench
from tests.conftest import REPO


def test_the_checkout_root_is_found_or_the_error_says_where_to_run(tmp_path):
    assert bench.checkout_root() == REPO
    with pytest.raises(FileNotFoundError, match="run `smt bench` from an SMT repository checkout"):
        bench.checkout_root((tmp_path,))


def test_the_command_runs_run_all_as_a_module_with_the_options(tmp_path, monkeypatch):
    args = argparse.Namespace(only=["ssm"], device="cpu", dtypes=["float32"], quick=True, threads=2,
                              output="report.md")
    monkeypatch.chdir(tmp_path)
    argv = bench.command(args)
    assert argv[1:3] == ["-m", "benchmarks.run_all"]
    assert argv[3:] == ["--only", "ssm", "--device", "cpu", "--dtypes", "float32", "--quick", "--threads", "2",
                        "--output", str(tmp_path / "report.md")]
    ran = {}
    monkeypatch.setattr(bench.subprocess, "run",
                        lambda argv, cwd: ran.update(argv=argv, cwd=cwd) or subprocess.CompletedProcess(argv, 3))
    assert bench.run(args) == 3 and ran == {"argv": argv, "cwd": REPO}


def test_smt_bench_outside_a_checkout_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from smt.cli import main

    find = bench.checkout_root
    monkeypatch.setattr(bench, "checkout_root", lambda: find((tmp_path,)))  # an install without a checkout
    assert main(["bench", "--quick"]) == 2
    assert "not installed with stride-memory" in capsys.readouterr().err
