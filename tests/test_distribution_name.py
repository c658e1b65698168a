"""Issue 40 part 1: the distribution is `stride-memory`; the import package and the command stay `smt`.

The registry's `smt` is another project (the Surrogate Modeling Toolbox 2.15.0), which also imports as `smt`:
nothing may tell a user to `pip install smt` (messages, docs, the model card, the remote-code shims), the
version is read from stride-memory's metadata, and a model directory saved before the rename
(tests/fixtures/pre_dist40_model, saved by commit ca3f05e with tiny_native(d_model=16, n_heads=2,
transformer_n_layers=1, ssm_n_layers=1, ssm_d_state=4, pooling_heads=1), tiny_tokenizer() and
evaluation={"val_loss": 3.25}; pre_dist40_logits.safetensors: its logits for a 13-token prompt) still loads,
and is pushed with its install advice brought up to date.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import types
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smt import distribution
from smt.distribution import DISTRIBUTION, NAME_CLASH
from smt.model_directory import (
    CARD_INSTALL,
    OLD_CARD_INSTALL,
    REMOTE_CODE,
    _remote_code,
    outdated_install_advice,
    push_to_hub,
    verify_model_files,
)
from tests.conftest import REPO
from tests.hf.helpers import save, tiny_native, tiny_tokenizer

OLD_MODEL = REPO / "tests" / "fixtures" / "pre_dist40_model"
OLD_LOGITS = REPO / "tests" / "fixtures" / "pre_dist40_logits.safetensors"
# advice to install the `smt` distribution: `pip install smt`, `pip install -U smt`, `pip install 'smt[lm-eval]'`
# (not `pip install stride-memory`, `pip uninstall smt`, nor the command `smt train ...`)
INSTALL_SMT = re.compile(r"""pip3?\s+install\s+(?:-\S+\s+)*["'`]?smt(?![\w-])""")
SMT_EXTRA = re.compile(r"""(?<![\w./-])["'`]?smt\[[\w,\s-]*\]""")  # smt[lm-eval], 'smt[dev]'
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".sh", ".yaml", ".yml", ".cfg", ".ipynb", ""}


def test_pyproject_names_the_distribution_stride_memory_and_keeps_the_smt_command():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == DISTRIBUTION == "stride-memory"
    assert project["scripts"] == {"smt": "smt.cli:main"}  # the command stays smt (the toolbox has none)
    assert (REPO / "src" / "smt" / "__init__.py").is_file()  # and the import package
    assert {"dev", "lm-eval", "wandb", "tensorboard", "mlflow", "cuda"} <= set(project["optional-dependencies"])


def test_the_version_is_read_from_stride_memory_s_metadata(monkeypatch):
    asked = []

    def version(name):
        asked.append(name)
        if name == "stride-memory":
            return "9.8.7"
        raise metadata.PackageNotFoundError(name)  # the old name, or the toolbox's: never read

    monkeypatch.setattr(distribution.metadata, "version", version)
    assert distribution.version() == "9.8.7" and asked == ["stride-memory"]


def test_run_from_the_source_tree_the_version_is_the_pyproject_s(monkeypatch, tmp_path):
    import smt

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(distribution.metadata, "version", not_installed)
    expected = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert distribution.version() == distribution.source_tree_version() == expected == smt.__version__
    file = tmp_path / "pyproject.toml"
    file.write_text('[build-system]\nrequires = []\n\n[project]\nname = "stride-memory"\nversion = "1.2.3"\n'
                    '\n[tool.other]\nversion = "9"\n')
    assert distribution.source_tree_version(file) == "1.2.3"
    file.write_text('[project]\nname = "smt"\nversion = "0.1.0"\n')  # another project's (or the old name's)
    assert distribution.source_tree_version(file) is None
    assert distribution.source_tree_version(tmp_path / "absent.toml") is None
    monkeypatch.setattr(distribution, "source_tree_version", lambda: None)
    assert distribution.version() == distribution.FALLBACK_VERSION


def test_the_install_patterns():
    for advice in ("pip install smt", "pip install -U smt", "pip install 'smt[lm-eval]'", "`pip install smt`.",
                   "python -m pip install --upgrade smt", 'pip install "smt[dev]"'):
        assert INSTALL_SMT.search(advice), advice
    for fine in ("pip install stride-memory", "pip install 'stride-memory[lm-eval]'", "pip install -e '.[dev]'",
                 "pip uninstall smt", "smt train --config c.yaml", "pip install smt-other", "import smt"):
        assert not INSTALL_SMT.search(fine) and not SMT_EXTRA.search(fine), fine
    assert SMT_EXTRA.search("needs smt[lm-eval]") and SMT_EXTRA.search("'smt[wandb]'")
    assert distribution.install() == "pip install stride-memory"
    assert distribution.install("lm-eval") == "pip install 'stride-memory[lm-eval]'"


def _user_facing_files() -> list[Path]:
    folders = [REPO / name for name in ("src", "docs", "scripts", ".ci", "benchmarks", "configs")]
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
             and "__pycache__" not in p.parts]
    files += [*REPO.glob("*.md"), REPO / "Makefile", REPO / "requirements.txt", REPO / "pyproject.toml"]
    return files


def test_nothing_tells_users_to_install_the_smt_distribution():
    files = _user_facing_files()
    assert REPO / "README.md" in files and REPO / "src" / "smt" / "commands" / "evaluate.py" in files
    found = [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
             for path in files for text in [path.read_text(encoding="utf-8", errors="replace")]
             for pattern in (INSTALL_SMT, SMT_EXTRA) for match in pattern.finditer(text)]
    assert not found, "advice to install the `smt` distribution (the Surrogate Modeling Toolbox):\n" + "\n".join(found)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "`stride-memory`" in readme and "Surrogate Modeling Toolbox" in readme


def _check_card(text: str) -> None:
    assert CARD_INSTALL in text and "pip install stride-memory" in text and "imports as `smt`" in text
    assert NAME_CLASH in text and "Surrogate Modeling Toolbox" in text and "MIT, as the stride-memory package." in text
    assert OLD_CARD_INSTALL not in text and not INSTALL_SMT.search(text) and not SMT_EXTRA.search(text)


def test_the_model_card_names_stride_memory(tmp_path, monkeypatch):
    _check_card((save(tiny_native(), tmp_path / "m", tiny_tokenizer()) / "README.md").read_text(encoding="utf-8"))
    import huggingface_hub

    uploaded = {}
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda repo_id, folder_path, **kwargs: uploaded.update(
        {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}))
    push_to_hub("someone/tiny", tiny_native("gpt"))  # a model: push_to_hub writes the card itself
    _check_card(uploaded["README.md"].decode("utf-8"))
    assert {name: uploaded[name].decode("utf-8") for name in REMOTE_CODE} == REMOTE_CODE


def _run_shim(code: str) -> None:
    exec(compile(code, "shim.py", "exec"), {})


def test_the_remote_code_shims_raise_an_import_error_naming_stride_memory(tmp_path, monkeypatch):
    from transformers.dynamic_module_utils import get_imports

    for name, code in REMOTE_CODE.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
        # transformers' check_imports asks nothing: it would answer a missing smt with `pip install smt`
        assert get_imports(tmp_path / name) == []
        assert not INSTALL_SMT.search(code) and "pip install stride-memory" in code
        module = re.search(r"from (\S+) import", code).group(1)
        with monkeypatch.context() as patch:  # no smt at all
            patch.setitem(sys.modules, module, None)
            with pytest.raises(ImportError) as error:
                _run_shim(code)
        with monkeypatch.context() as patch:  # an `smt` without smt.hf: the toolbox
            patch.setitem(sys.modules, "smt", types.ModuleType("smt"))
            for loaded in [m for m in sys.modules if m.startswith("smt.")]:
                patch.delitem(sys.modules, loaded)
            with pytest.raises(ImportError) as toolbox:
                _run_shim(code)
        for raised in (error.value, toolbox.value):
            message = str(raised)
            assert "pip install stride-memory" in message and "imported as `smt`" in message
            assert NAME_CLASH in message and not INSTALL_SMT.search(message)
        _run_shim(code)  # with smt installed: the one import
    # a dependency missing inside smt is not mistaken for a missing smt
    (tmp_path / "needs_a_dependency.py").write_text('"""Stands in for smt.hf."""\nimport no_such_dependency_xyz\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as other:
        _run_shim(_remote_code("AutoConfig", "needs_a_dependency", "X"))
    assert other.value.name == "no_such_dependency_xyz" and DISTRIBUTION not in str(other.value)


@pytest.mark.slow
def test_transformers_without_stride_memory_says_to_install_it(tmp_path):
    """What a user without stride-memory sees: transformers alone, trust_remote_code, no smt (or the
    toolbox's smt). The directory saved before the rename got transformers' own `pip install smt`."""
    new = save(tiny_native("mamba"), tmp_path / "model")
    toolbox = tmp_path / "toolbox" / "smt"
    toolbox.mkdir(parents=True)
    (toolbox / "__init__.py").write_text('"""A stand-in for the Surrogate Modeling Toolbox."""\n')
    code = textwrap.dedent(f"""
        import json, sys
        if sys.argv[1] == "none":  # smt is not installed: import smt -> No module named 'smt'
            class NotInstalled:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "smt":
                        raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            sys.meta_path.insert(0, NotInstalled())
        else:
            sys.path.insert(0, {str(toolbox.parent)!r})
        from transformers import AutoModelForCausalLM
        messages = {{}}
        for name, directory in (("new", {str(new)!r}), ("old", {str(OLD_MODEL)!r})):
            try:
                AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True)
                messages[name] = None
            except ImportError as error:
                messages[name] = str(error)
        print(json.dumps(messages))
    """)
    for smt in ("none", "toolbox"):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "HF_MODULES_CACHE": str(tmp_path / f"modules-{smt}"), "PYTHONPATH": str(REPO / "src")}
        result = subprocess.run([sys.executable, "-c", code, smt], capture_output=True, text=True, timeout=120,
                                env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr[-3000:]
        messages = json.loads(result.stdout.strip().splitlines()[-1])
        assert messages["new"] and "pip install stride-memory" in messages["new"], messages
        assert NAME_CLASH in messages["new"] and not INSTALL_SMT.search(messages["new"])
        if smt == "none":  # the problem the shims fix
            assert messages["old"] and "pip install smt" in messages["old"], messages


def test_a_directory_saved_before_the_rename_still_loads(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, dynamic_module_utils

    from smt import StrideHybridModel
    from smt.models import load_model

    expected = load_file(str(OLD_LOGITS))
    assert "With the smt package installed:" in (OLD_MODEL / "README.md").read_text(encoding="utf-8")
    verify_model_files(OLD_MODEL)
    for model in (load_model(OLD_MODEL), StrideHybridModel.from_pretrained(OLD_MODEL)):
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(expected["input_ids"])[0], expected["logits"], atol=0, rtol=0)
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    model = AutoModelForCausalLM.from_pretrained(OLD_MODEL, trust_remote_code=True)
    with torch.no_grad():
        torch.testing.assert_close(model(expected["input_ids"]).logits, expected["logits"])


def test_pushing_a_directory_saved_before_the_rename_brings_its_install_advice_up_to_date(tmp_path, monkeypatch):
    import huggingface_hub

    old = tmp_path / "old"
    shutil.copytree(OLD_MODEL, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    uploads = []

    def upload_folder(repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        verify_model_files(folder)  # the staged copy's checksums.json records the new texts
        uploads.append((folder, {p.name: p.read_bytes() for p in folder.iterdir()}))

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    assert sorted(outdated_install_advice(old)) == ["README.md", "configuration_smt.py", "modeling_smt.py"]
    with pytest.warns(UserWarning, match="saved before the distribution was named stride-memory"):
        push_to_hub("someone/old", old)
    folder, files = uploads[-1]
    assert folder != old and sorted(files) == sorted(before)
    assert {name: files[name].decode("utf-8") for name in REMOTE_CODE} == REMOTE_CODE
    card = files["README.md"].decode("utf-8")
    _check_card(card)
    # the card's code block stays under its install line, the warning after it; the rest as it was
    assert card.index(CARD_INSTALL) < card.index("```python") < card.index(NAME_CLASH) < card.index("Batches with")
    old_card = before["README.md"].decode("utf-8")
    assert "| val_loss | 3.25 |" in card and card.count("\n") == old_card.count("\n") + 2
    unchanged = set(before) - {"README.md", "checksums.json", *REMOTE_CODE}
    assert all(files[name] == before[name] for name in unchanged)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # the directory itself is left as it was
    new = save(tiny_native(), tmp_path / "new", tiny_tokenizer())
    assert outdated_install_advice(new) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        push_to_hub("someone/new", new)
    assert uploads[-1][0] == new  # a directory saved since: uploaded as it is
