#!/usr/bin/env python
"""Check the package layout and print file count, code size and lines.

Exits non-zero when a required module is missing or a module has no docstring, so the layout
promised in the README (one concept per module) stays true.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = [
    "src/smt/__init__.py",
    "src/smt/config.py",
    "src/smt/cli.py",
    "src/smt/models/base.py",
    "src/smt/models/stride_hybrid.py",
    "src/smt/models/generation.py",
    "src/smt/models/components/attention_pooling.py",
    "src/smt/models/components/stream_state.py",
    "src/smt/models/components/windowed_attention.py",
    "src/smt/models/components/transformer.py",
    "src/smt/models/components/ssm.py",
    "src/smt/models/components/scan.py",
    "src/smt/models/memory/chain.py",
    "src/smt/models/memory/fused_chain.py",
    "src/smt/models/components/rope.py",
    "scripts/verify_structure.py",
    "README.md",
    "Makefile",
    ".ci/run",
    "pyproject.toml",
]
PUBLIC_NAMES = ["StrideHybridConfig", "StrideHybridModel", "TrainingConfig", "AttentionPoolingAnalyzer",
                "SimpleSSM", "SimpleCausalTransformer"]


def main() -> int:
    problems = [f"missing: {path}" for path in REQUIRED if not (ROOT / path).exists()]
    sources = sorted((ROOT / "src").rglob("*.py"))
    tests = sorted((ROOT / "tests").rglob("test_*.py"))
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if path.stat().st_size > 0 and ast.get_docstring(tree) is None:
            problems.append(f"no module docstring: {path.relative_to(ROOT)}")
    init = (ROOT / "src/smt/__init__.py").read_text(encoding="utf-8")
    problems += [f"not exported from smt: {name}" for name in PUBLIC_NAMES if name not in init]

    def lines(paths):
        return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in paths)

    print(f"package modules : {len(sources)} files, {sum(p.stat().st_size for p in sources) / 1024:.1f} KiB, "
          f"{lines(sources)} lines")
    print(f"test modules    : {len(tests)} files, {lines(tests)} lines")
    for folder in sorted({p.parent for p in sources}):
        group = [p for p in sources if p.parent == folder]
        print(f"  {str(folder.relative_to(ROOT)):40s} {len(group):3d} files {lines(group):6d} lines")
    if problems:
        print("\n".join(["", "problems:", *problems]))
        return 1
    # the seed quick start's expected output: layout ready, total code size, total code lines
    print("✅ 프로젝트 구조 준비 완료! (layout ok)")
    print(f"📊 총 코드 크기: {sum(p.stat().st_size for p in sources) / 1024:.1f} KB")
    print(f"📝 총 코드 줄: {lines(sources):,} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
