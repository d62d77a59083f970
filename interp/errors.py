"""Errors that say what went wrong and what to do about it.

Every error `interp` raises on bad input is an `InterpError`; the message names the problem and
the fix, so a notebook user never has to read a traceback to know what to change.
"""

import operator
import os
from pathlib import Path


class InterpError(Exception):
    """Base class: bad input or an unusable environment, explained."""


class ModelNotFoundError(InterpError, FileNotFoundError):
    """A model reference that names no local file, directory, embedded model or reachable hub id."""


class CorruptModelError(InterpError):
    """A model file that exists but cannot be read (truncated download, wrong format)."""


class UnsupportedArchitectureError(InterpError):
    """A model whose attention `interp` cannot capture exactly."""


class IndexOutOfRangeError(InterpError, IndexError):
    """A layer, head or position index outside the model or the prompt."""


class PromptTooLongError(InterpError, ValueError):
    """A prompt longer than the model's context window."""


class MemoryBudgetError(InterpError, MemoryError):
    """A request whose results cannot fit in the memory budget it was given."""


class BadIndexError(InterpError, TypeError):
    """An index that is not an integer (a float, a string, a bool)."""


def as_index(value, kind: str) -> int:
    """`value` as a Python int if it is an integer (numpy / torch integers too), else a clear error.

    >>> as_index(3, "head")
    3
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise BadIndexError(f"a {kind} index must be an integer; got {value!r}.") from None


def check_index(kind: str, index: int, size: int, *, where: str = "") -> int:
    """Return `index` (negative counts from the end) or raise a clear `IndexOutOfRangeError`.

    >>> check_index("head", -1, 9)
    8
    """
    index = as_index(index, kind)
    if not -size <= index < size:
        place = f" of {where}" if where else ""
        raise IndexOutOfRangeError(
            f"{kind} index {index} is out of range{place}: valid {kind}s are 0..{size - 1} "
            f"(or -{size}..-1 counting from the end)."
        )
    return index % size


class OutputPathError(InterpError):
    """An output folder that cannot be created or written."""


def check_out_dir(path: str | os.PathLike) -> Path:
    """Return `path` as a `Path` if it is (or can be created as) a writable folder, else a clear error.

    Nothing is created: the nearest existing ancestor must be a writable folder, and no part of the
    path may be a file. Commands call it before any computation, so results are never lost at the end.

    >>> check_out_dir("/tmp/interp-doc/run1")
    PosixPath('/tmp/interp-doc/run1')
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"--out {path} is a file, not a folder; choose a folder.")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"--out {path} is under {existing}, which is a file; choose a folder "
                              "elsewhere.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"--out {path}: the folder {existing} is not writable; choose another --out "
                              "folder.")
    return path
