"""The documentation's links resolve, the memory notebook is indexed, and the source cites no question numbers.

docs/MEMORY.md is the findings page; its experiments live in docs/notebook/, one file per question.
Question numbers are the notebook's file names, so code that cited "MEMORY.md Q14" would point at
nothing once the page was rewritten: the source cites the findings page by section instead.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _tracked(pattern: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


def _relative_links(path) -> list[tuple[int, str]]:
    """(line, target) of every relative markdown link outside code blocks."""
    links, fence = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        for target in LINK.findall(line):
            if not target.startswith(("http://", "https://", "mailto:", "#")):
                links.append((number, target.split("#")[0]))
    return links


MARKDOWN = [p for p in _tracked("*.md") if not p.startswith("tests/")] if (REPO / ".git").exists() else []


@pytest.mark.skipif(not MARKDOWN, reason="needs the git checkout")
def test_relative_markdown_links_resolve():
    broken = [f"{name}:{line}: {target}" for name in MARKDOWN
              for line, target in _relative_links(REPO / name) if not (REPO / name).parent.joinpath(target).exists()]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_notebook_entry_is_indexed_and_linked_from_the_findings():
    notebook = REPO / "docs" / "notebook"
    entries = sorted(p.name for p in notebook.glob("*.md") if p.name != "README.md")
    assert len([e for e in entries if re.match(r"Q\d\d-", e)]) == 18
    index = {target for _, target in _relative_links(notebook / "README.md")}
    findings = {target for _, target in _relative_links(REPO / "docs" / "MEMORY.md")}
    assert set(entries) <= index
    assert {f"notebook/{entry}" for entry in entries} <= findings


def test_the_source_cites_no_question_numbers():
    cited = [f"{path.relative_to(REPO)}:{number}" for path in sorted((REPO / "src").rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"Q1[0-9]|Q[1-9]\b", line)]
    assert not cited, "cite docs/MEMORY.md by section (or a docs/notebook/ file from docs), not by question: " + \
        ", ".join(cited)


# "tests/x.py ... (N tests" on one line of a doc, and README's counts of the whole suite
QUOTED_COUNT = re.compile(r"(tests/[\w/.-]*\w)`?[^\n]{0,40}?\b(\d+) tests\b")
SUITE_COUNT = re.compile(r"runs the suite \((\d+) tests")
SLOW_COUNT = re.compile(r"leaves out the (\d+) tests marked slow")


def _collected(*args: str) -> list[str]:
    """The node ids pytest collects under tests/ (with `args`, e.g. -m slow), in a pytest of its own."""
    import sys

    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "tests", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    return [line for line in out.stdout.splitlines() if "::" in line]


def _this_session(request) -> tuple[list[str], list[str]] | None:
    """Every node id and the slow ones, from the running session when it collected the whole suite
    (`make test`: `pytest tests`, no -k or -m), which spares a second collection of ~1000 tests."""
    config = request.config
    whole = [str((REPO / "tests").resolve())] == [str((config.invocation_params.dir / a).resolve())
                                                  for a in config.args]
    if not whole or config.option.keyword or config.option.markexpr:
        return None
    items = request.session.items
    return ([item.nodeid for item in items], [item.nodeid for item in items if item.get_closest_marker("slow")])


@pytest.mark.slow
def test_the_test_counts_the_docs_quote_are_the_counts_collected(request):
    """README's suite and slow counts and every "tests/PATH ... N tests" of the docs: a count that
    went stale fails here with the number to write."""
    every, slow = _this_session(request) or (_collected(), _collected("-m", "slow"))
    assert every, "pytest collected nothing"
    stale = []
    for name in ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]:
        text = (REPO / name).read_text(encoding="utf-8")
        for pattern, ids in ((SUITE_COUNT, every), (SLOW_COUNT, slow)):
            for quoted in pattern.findall(text):
                if int(quoted) != len(ids):
                    stale.append(f"{name}: says {quoted}, collected {len(ids)} ({pattern.pattern})")
        for path, quoted in QUOTED_COUNT.findall(text):
            count = sum(1 for node in every if node == path or node.startswith(path.rstrip("/") + ("::" if
                        path.endswith(".py") else "/")))
            if int(quoted) != count:
                stale.append(f"{name}: {path} says {quoted} tests, collected {count}")
    assert not stale, "\n".join(stale)


def test_the_demo_output_the_docs_show_is_the_recorded_one():
    """README and docs/evaluation.md show the demo's output as docs/results/demo/output.txt records it
    (rerun the demo and replace all three together)."""
    recorded = (REPO / "docs" / "results" / "demo" / "output.txt").read_text(encoding="utf-8").strip("\n")
    for name in ("README.md", "docs/evaluation.md"):
        blocks = re.findall(r"```\n(task: passkey.*?)\n```", (REPO / name).read_text(encoding="utf-8"), re.S)
        assert blocks == [recorded], f"{name}'s demo output differs from docs/results/demo/output.txt"
