"""Fuzzing `smt`: random argument lists and random config files never give a raw traceback, only
a result or an error message (argparse's usage line, or one line naming the problem)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smt import StrideHybridConfig, TrainingConfig
from smt.cli import main
from smt.training.run_config import RunConfig

FIELDS = {"model": [f.name for f in fields(StrideHybridConfig)] + ["preset", "n_layers", "ssm_layers"],
          "training": [f.name for f in fields(TrainingConfig)],
          "run": [f.name for f in fields(RunConfig) if f.name not in ("output_dir", "cache_dir", "tokenizer")]}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["tiny", "rope", "mamba", "fast", "", "1e-3", "cuda", "stream", "-1"]),
                    st.text(max_size=8))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2))
NAMES = st.one_of(st.sampled_from([n for names in FIELDS.values() for n in names]), st.text(min_size=1, max_size=10))


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse's own errors
            code = stop.code
    return code, err.getvalue()


def _assert_clean(code, err: str, argv) -> None:
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code:
        assert "error" in err, (argv, err)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.tuples(st.sampled_from(["", "model.", "training.", "run."]), NAMES, SCALARS),
                          max_size=4))
@pytest.mark.slow
def test_random_overrides(overrides):
    argv = ["train", "--print-config"]
    for section, name, value in overrides:
        argv += [f"--{section}{name}", str(value)]
    _assert_clean(*_run(argv), argv)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=st.one_of(
    st.dictionaries(st.sampled_from(["model", "training", "run", "other"]),
                    st.one_of(st.dictionaries(NAMES, VALUES, max_size=4), SCALARS), max_size=3),
    st.lists(SCALARS, max_size=3), SCALARS),
    raw=st.one_of(st.none(), st.binary(max_size=40)))
@pytest.mark.slow
def test_random_config_files(tmp_path_factory, config, raw):
    import yaml

    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
    argv = ["train", "--config", str(path), "--print-config"]
    _assert_clean(*_run(argv), (argv, config, raw))


@settings(max_examples=60, deadline=None)
@given(argv=st.lists(st.sampled_from(["--checkpoint", "nowhere", "--passkey", "abc", "256,0", "--depths", "x",
                                      "--task", "{bad", "--positions", "-1", "--samples", "0", "--seed", "1.5"]),
                     max_size=6), command=st.sampled_from(["eval", "generate", "analyze", "diagnose", "info"]))
@pytest.mark.slow
def test_random_arguments_to_the_other_commands(argv, command):
    _assert_clean(*_run([command, *argv]), [command, *argv])
