"""The distribution's name, which is not the import name: `pip install stride-memory`, `import smt`.

The `smt` name on the package registry (PyPI) belongs to an unrelated project, the Surrogate
Modeling Toolbox, which also imports as `smt`: installing the `smt` distribution gets the toolbox, and the two
cannot be installed side by side (each would overwrite the other's `smt` package). So every message
that tells a user what to install names DISTRIBUTION (`install`), and the version is read from
DISTRIBUTION's metadata (`version`), never from a distribution called `smt` (the toolbox's, when it is
installed). The console script stays `smt` (the toolbox has none).

This module imports nothing of smt, so any module can use it.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "stride-memory"  # pyproject.toml's [project] name: what pip installs
IMPORT_NAME = "smt"  # the package it installs: `import smt`
# the warning a model card and the remote-code ImportError carry
NAME_CLASH = (f"The `{IMPORT_NAME}` distribution on PyPI is the unrelated Surrogate Modeling Toolbox, not this "
              f"project: it also imports as `{IMPORT_NAME}`, so it cannot be installed alongside {DISTRIBUTION} "
              f"(remove it first: pip uninstall {IMPORT_NAME}).")
FALLBACK_VERSION = "0+unknown"  # neither installed nor in a source tree with its pyproject.toml


def install(extra: str | None = None) -> str:
    """The pip command that installs the project (with `extra`, e.g. "lm-eval"): pip install stride-memory,
    pip install 'stride-memory[lm-eval]'."""
    return f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install {DISTRIBUTION}"


def version() -> str:
    """The installed DISTRIBUTION's version; run from a source tree without installing it (PYTHONPATH=src),
    the version in the tree's pyproject.toml; else FALLBACK_VERSION."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return source_tree_version() or FALLBACK_VERSION


def source_tree_version(pyproject: Path | None = None) -> str | None:
    """[project] version of the pyproject.toml two folders above the package (src/smt -> the checkout), when
    that file exists and names DISTRIBUTION; else None. Read with a pattern: tomllib is Python 3.11+."""
    file = pyproject or Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError:
        return None
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    if project is None:
        return None
    name = re.search(r'^name\s*=\s*"([^"]*)"', project.group(1), re.MULTILINE)
    found = re.search(r'^version\s*=\s*"([^"]*)"', project.group(1), re.MULTILINE)
    if name is None or found is None or name.group(1) != DISTRIBUTION:
        return None
    return found.group(1)
