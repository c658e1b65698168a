"""Files that are replaced whole or not at all: written to a temporary file beside the target,
fsynced, then renamed over it, so a kill at any moment leaves the old file or the new one, never
a truncated mix. The temporary file is named `.NAME.tmp-XXXX`; a kill can leave one behind, and
`staging_leftovers` finds them for the next start to sweep."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from smt.errors import writing_under


def shared_mode(directory: bool = False) -> int:
    """The mode a plain open() / mkdir() gives under the process umask (0644 / 0755 with the usual
    022), for files and folders made by mkstemp / mkdtemp (0600 / 0700): checkpoints on a cluster
    are read by other jobs and users."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def staging_prefix(name: str) -> str:
    return f".{name}.tmp-"


@contextmanager
def atomic_output(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """An open temporary file that replaces `path` when the block ends without an error; on an
    error it is removed and `path` is untouched."""
    path = Path(path)
    with writing_under(path):
        handle, temporary = tempfile.mkstemp(prefix=staging_prefix(path.name), dir=path.parent)
    try:
        os.chmod(temporary, shared_mode())
        text = {} if binary else {"encoding": "utf-8", "newline": ""}  # newline "": the text as given
        with os.fdopen(handle, "wb" if binary else "w", **text) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            raise type(error)(error.errno, error.strerror, str(path)) from error
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_output(path) as out:
        out.write(text)


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 1) -> None:
    with atomic_output(path) as out:
        json.dump(data, out, indent=indent)


def staging_leftovers(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Temporary files of interrupted atomic writes of `names` in `directory` (also the `.NAME.XXXX`
    ones of earlier versions)."""
    if not directory.is_dir():
        return []
    return [p for name in names for p in directory.glob(f".{name}.*") if p.is_file()]
