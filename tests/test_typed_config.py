"""Issue 39 section 4: every config value is typed by its dataclass annotation, in one place.

A generating test feeds values of the wrong type to every field of the three configs, through a
config file and through the command line, and expects one line naming the field; the regression
tests below are the cases the issue lists."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import time
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smt.cli import main
from smt.config import ConfigError, StrideHybridConfig, TrainingConfig
from smt.training.run_config import RunConfig, load_run_config

SECTIONS = {"model": StrideHybridConfig, "training": TrainingConfig, "run": RunConfig}
FIELDS = [(section, f.name, typing.get_type_hints(cls)[f.name]) for section, cls in SECTIONS.items()
          for f in dataclasses.fields(cls)]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.integers(-3, 3),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1.5, 1e300]),
                    st.text(max_size=6), st.sampled_from(["5", "1e-3", "true", "no", "null", "smt", "csv"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.text(max_size=3), SCALARS, max_size=1))


def _fits(hint: Any, value: Any) -> bool:
    """The test's own statement of what each annotation admits (the spec, not the implementation)."""
    if get_origin(hint) in (Union, types.UnionType):
        return any(_fits(option, value) for option in get_args(hint))
    if get_origin(hint) is Literal:
        return isinstance(value, str) and value in get_args(hint)
    if get_origin(hint) is list:
        return isinstance(value, list) and all(_fits(get_args(hint)[0], item) for item in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if hint is int:
        whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        return whole and abs(value) < 2**63
    if hint is float:  # any finite number; an int too large for a float does not fit
        try:
            return isinstance(value, (int, float)) and math.isfinite(float(value))
        except OverflowError:
            return False
    return isinstance(value, hint)  # str, dict


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    return code, err.getvalue()


def _assert_names_field(code: int, err: str, field: str, context: Any) -> None:
    assert code == 2, (context, code, err)
    assert err.count("\n") == 1 and "Traceback" not in err, (context, err)
    assert f"{field}=" in err, (context, err)


def _as_number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _cli_text(value: Any) -> str:
    """The command-line spelling of `value` (YAML, as the command line reads it)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()


@st.composite
def wrong_values(draw: st.DrawFn) -> tuple[str, str, Any]:
    section, name, hint = draw(st.sampled_from(FIELDS))
    value = draw(VALUES.filter(lambda v: not _fits(hint, v)))
    return section, name, value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.filter_too_much])
@given(case=wrong_values(), as_json=st.booleans())
@pytest.mark.slow
def test_wrong_types_in_a_file_name_the_field(tmp_path_factory, case, as_json):
    section, name, value = case
    hint = typing.get_type_hints(SECTIONS[section])[name]
    # a YAML file is read as the command line is: a string written plain that reads as a number
    # (0E0, 1E-1: no dot, a string to YAML 1.1) is that number
    assume(as_json or not (isinstance(value, str) and _fits(hint, _as_number(value))))
    path = tmp_path_factory.mktemp("cfg") / ("c.json" if as_json else "c.yaml")
    data = {section: {name: value}}
    path.write_text(json.dumps(data) if as_json else yaml.safe_dump(data), encoding="utf-8")
    _assert_names_field(*_run(["train", "--config", str(path), "--print-config"]), f"{section}.{name}", data)


@settings(max_examples=150, deadline=None)
@given(case=wrong_values())
@pytest.mark.slow
def test_wrong_types_on_the_command_line_name_the_field(case):
    section, name, value = case
    hint = typing.get_type_hints(SECTIONS[section])[name]
    # the command line reads a number written as YAML 1.1 leaves a string (1E-1, no dot) as that number
    assume(not (isinstance(value, str) and _fits(hint, _as_number(value))))
    argv = ["train", "--print-config", f"--{section}.{name}={_cli_text(value)}"]
    _assert_names_field(*_run(argv), f"{section}.{name}", argv)


@pytest.mark.parametrize("section,name,hint", FIELDS, ids=[f"{s}.{n}" for s, n, _ in FIELDS])
def test_every_field_refuses_a_mapping_or_a_list_of_mappings(section, name, hint):
    value = {"x": 1} if not _fits(hint, {"x": 1}) else [{"x": 1}]
    with pytest.raises(ConfigError, match=rf"{section}\.{name}="):
        load_run_config(None, {section: {name: value}})


# ---------------------------------------------------------------- the cases of issue 39, section 4
@pytest.mark.parametrize("argv,field", [
    (["--max_steps", "1.5"], "training.max_steps"),
    (["--compile", '"false"'], "training.compile"),
    (["--progress", '"no"'], "run.progress"),
    (["--full_final_eval", "maybe"], "run.full_final_eval"),
    (["--rope_base", ".inf"], "model.rope_base"),
    (["--ssm_dt_max", ".nan"], "model.ssm_dt_max"),
    (["--lr", "null"], "training.lr"),
    (["--max_steps", "abc"], "training.max_steps"),
    (["--seed", "2**70"], "training.seed"),
    (["--seed", str(2**70)], "training.seed"),
    (["--train_data", "5"], "run.train_data"),
])
def test_issue_cases_on_the_command_line(argv, field):
    _assert_names_field(*_run(["train", "--print-config", *argv]), field, argv)


@pytest.mark.parametrize("text,field", [
    ('training:\n  max_steps: 1.5\n', "training.max_steps"),
    ('run:\n  progress: "no"\n', "run.progress"),
    ("run:\n  full_final_eval: maybe\n", "run.full_final_eval"),
    ("model:\n  rope_base: .inf\n", "model.rope_base"),
    ("training:\n  compile: 'false'\n", "training.compile"),
])
def test_issue_cases_in_a_file(tmp_path, text, field):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    _assert_names_field(*_run(["train", "--config", str(path), "--print-config"]), field, text)


def test_a_second_section_in_yaml_is_refused_with_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 0.1\nrun:\n  progress: false\ntraining:\n  max_steps: 5\n")
    code, err = _run(["train", "--config", str(path), "--print-config"])
    assert code == 2 and "c.yaml" in err and "duplicate key 'training'" in err and "line 5" in err, err


def test_duplicate_fields_in_yaml_and_json_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("training:\n  lr: 0.1\n  lr: 0.2\n")
    (tmp_path / "c.json").write_text('{"training": {"lr": 0.1}, "training": {"max_steps": 5}}')
    for name in ("c.yaml", "c.json"):
        code, err = _run(["train", "--config", str(tmp_path / name), "--print-config"])
        assert code == 2 and name in err and "duplicate key" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [
    ["--model.n_layers", "3", "--model.transformer_n_layers", "2"],
    ["--n_layers", "3", "--transformer_n_layers", "2"],
    ["--ssm_layers", "3", "--model.ssm_n_layers", "2"],
])
def test_old_and_new_names_together_on_the_command_line_are_refused(argv):
    code, err = _run(["train", "--print-config", *argv])
    assert code == 2 and "keep one" in err, err


def test_one_setting_given_twice_on_the_command_line_is_refused():
    code, err = _run(["train", "--print-config", "--lr", "0.1", "--training.lr", "0.2"])
    assert code == 2 and "given twice" in err, err
    with pytest.raises(ConfigError, match="keep one"):
        load_run_config(None, ["--lr", "0.1", "--lr", "0.2"])


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  task:\n" + "".join("    " + line + "\n" for line in BOMB.splitlines()))
    start = time.perf_counter()
    code, err = _run(["train", "--config", str(path), "--print-config"])
    assert code == 2 and "alias" in err and "c.yaml" in err, err
    flow = "{" + ", ".join(BOMB.splitlines()) + "}"
    code, err = _run(["train", "--print-config", "--task", flow])
    assert code == 2 and "task" in err and "alias" in err, err
    assert time.perf_counter() - start < 5


def test_an_oversized_config_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 0.1\n" + "# padding\n" * 200_000)
    code, err = _run(["train", "--config", str(path), "--print-config"])
    assert code == 2 and "more than a config's" in err, err


def test_whole_floats_become_ints_and_ints_become_floats():
    config = load_run_config(None, ["--max_steps", "1e3", "--lr", "1", "--d_model", "64.0"])
    assert config.training.max_steps == 1000 and type(config.training.max_steps) is int
    assert type(config.training.lr) is float and type(config.model.d_model) is int


def test_python_callers_get_the_same_checks():
    with pytest.raises(ConfigError, match=r"training\.compile="):
        TrainingConfig(compile="false")
    with pytest.raises(ConfigError, match=r"model\.arch=.*one of: smt, gpt, swa, mamba"):
        StrideHybridConfig.tiny(arch="transformer")
    with pytest.raises(ConfigError, match=r"model\.rope_base="):
        StrideHybridConfig.tiny().replace(rope_base=float("inf"))
