"""Errors that say what went wrong and what to do about it.

Every error `interp` raises on bad input is an `InterpError`; the message names the problem and
the fix, so a notebook user never has to read a traceback to know what to change.
"""


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


def check_index(kind: str, index: int, size: int, *, where: str = "") -> int:
    """Return `index` (negative counts from the end) or raise a clear `IndexOutOfRangeError`.

    >>> check_index("head", -1, 9)
    8
    """
    if not -size <= index < size:
        place = f" of {where}" if where else ""
        raise IndexOutOfRangeError(
            f"{kind} index {index} is out of range{place}: valid {kind}s are 0..{size - 1} "
            f"(or -{size}..-1 counting from the end)."
        )
    return index % size
