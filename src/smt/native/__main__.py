"""`python -m smt.native`: builds the native gated scan into its cache (if it is not there) and says where."""

from __future__ import annotations

import sys

from smt import native


def main() -> int:
    if not native.enabled():
        print("smt.native: off (SMT_NATIVE=0); the PyTorch scans run")
        return 0
    try:
        path = native.build()
    except native.NativeBuildError as error:
        print(f"smt.native: not built, the PyTorch scans run instead: {error}")
        return 0
    print(f"smt.native: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
