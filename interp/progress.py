"""One progress display for long work: rich bars on stderr, drawn only when asked.

    >>> for batch in track(range(3), "scoring", enabled=False):   # a loop with a bar (here: none)
    ...     pass
    >>> with bar(enabled=False) as b:                             # several tasks, advanced by hand
    ...     task = b.add_task("trials", total=10)
    ...     b.advance(task, 4)

A disabled display is a rich `Progress(disable=True)`: the same calls, nothing drawn. Every long
loop in `interp` shows its progress through these two functions, with the same columns.
"""

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def bar(*, enabled: bool = True, transient: bool = False) -> Progress:
    """A progress display (a context manager): `add_task`, `advance`, `update`, as rich's `Progress`."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    return Progress(*columns, disable=not enabled, transient=transient)


def track(items: Iterable[T], description: str, *, enabled: bool = True, total: int | None = None,
          transient: bool = True) -> Iterator[T]:
    """`items`, one at a time, with a bar of `total` (default `len(items)`) steps while they run."""
    with bar(enabled=enabled, transient=transient) as display:
        yield from display.track(items, total=total, description=description)


__all__ = ["bar", "track"]
