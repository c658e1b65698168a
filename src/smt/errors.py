"""The command line's error boundary: every exception a command raises becomes one line naming the
file or field and the fix. An exception nobody anticipated prints one line plus where its full
traceback was written (or the traceback itself with SMT_DEBUG=1)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEBUG_ENV = "SMT_DEBUG"
# a failed write with less free space than this left is taken as a full disk, whatever the writer
# reported (torch's serializer says "unexpected pos" or "iostream error", not ENOSPC)
NEARLY_FULL_BYTES = 1 << 20

_FIXES = {
    errno.EROFS: "the file system is read-only; choose a writable location (another {option})",
    errno.EACCES: "permission denied; choose a location you can write to, or change its permissions",
    errno.EPERM: "operation not permitted; choose a location you can write to",
    errno.ENOTDIR: "a part of this path is a file, not a directory; choose another path",
    errno.EISDIR: "this is a directory where a file is expected; name a file",
    errno.EEXIST: "a file is in the way where a directory is expected; remove it or choose another path",
    errno.ENAMETOOLONG: "the file name is too long; choose a shorter path",
    errno.ENOENT: "it does not exist; check the path",
}


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def free_bytes(path: str | Path) -> int | None:
    """Free space of the file system holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def is_disk_full(error: BaseException, path: str | Path | None = None) -> bool:
    """ENOSPC / EDQUOT anywhere in the exception chain (or in safetensors' message), or a failed
    write (torch's RuntimeError, any writer's error) where the disk holding `path` has almost no
    space left."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    if "No space left on device" in str(error):  # safetensors' Rust writer: "I/O error: No space left ..."
        return True
    if path is None or not isinstance(error, Exception):
        return False
    free = free_bytes(path)
    return free is not None and free < NEARLY_FULL_BYTES


@contextmanager
def writing_under(path: str | Path) -> Iterator[None]:
    """An OSError without a file name (a write or flush that hit a full or read-only disk) gets
    `path`, so its one line can say where."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from error


@contextmanager
def plain_warnings() -> Iterator[None]:
    """smt's own warnings (UserWarning raised in the package, e.g. a data file skipped) print as one
    `warning: ...` line on stderr, as the command line's other warnings do, not as Python's
    `file:line: UserWarning: ...` plus a source line; any other warning keeps Python's format."""
    import sys
    import warnings

    package = str(Path(__file__).resolve().parent)
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(package):
                text = str(message)
                print(text if text.startswith("warning") else f"warning: {text}", file=file or sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def disk_full_message(path: str | Path, option: str = "--output_dir") -> str:
    free = free_bytes(path)
    shown = "unknown" if free is None else f"{free:,}"
    return f"disk full at {path}: free {shown} bytes; free space or choose another {option}"


def _os_error_line(error: OSError, option: str) -> str:
    where = error.filename if error.filename is not None else ""
    if is_disk_full(error):
        return disk_full_message(where or os.getcwd(), option)
    fix = _FIXES.get(error.errno, error.strerror or str(error)).format(option=option)
    return f"cannot use {where}: {fix}" if where else f"{error.strerror or error}: {fix}"


def _memory_line(error: BaseException) -> str:
    return (f"out of memory ({type(error).__name__}: {_first_line(error)}); use a smaller model, batch_size or "
            "seq_len, or a machine with more memory")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def known_error_line(error: BaseException, option: str = "--output_dir") -> str | None:
    """The one line for an error whose message is written for the user, else None; `option` is the
    command's output location, suggested when it cannot be written."""
    import torch

    from smt.training.trainer import NonFiniteError

    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return _memory_line(error)
    if isinstance(error, OSError):  # a message of our own has no errno
        return " ".join(str(error).split("\n")) if error.errno is None else _os_error_line(error, option)
    if isinstance(error, (ValueError, TypeError, NonFiniteError)):
        return " ".join(str(error).split("\n")).strip() or type(error).__name__
    return None


def write_traceback(error: BaseException) -> Path | None:
    """The full traceback in a file under the temporary directory; None when that cannot be written."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        handle, name = tempfile.mkstemp(prefix=f"smt-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as out:
            out.write(text)
    except OSError:
        return None
    return Path(name)


def unexpected_error_line(error: BaseException) -> str:
    """One line for an error nobody anticipated; the traceback goes to a file (or stderr under SMT_DEBUG)."""
    summary = f"unexpected {type(error).__name__}: {_first_line(error)}"
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(type(error), error, error.__traceback__)
        return f"{summary} (traceback above, {DEBUG_ENV} is set)"
    where = write_traceback(error)
    if where is None:
        traceback.print_exception(type(error), error, error.__traceback__)
        return f"{summary} (traceback above: the temporary directory is not writable)"
    return f"{summary}; the full traceback is in {where} (or set {DEBUG_ENV}=1 to print it); please report it"
