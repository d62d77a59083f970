"""Crash-safe files for scans: atomic JSON writes and a folder of finished work units.

Every file a scan writes goes to a temporary name in the same folder and is then renamed over the
target (`os.replace`, atomic on POSIX and Windows), so a run killed at any instant leaves either
the old file or the new one, never half of one. Finished units of an analysis (one batch of
prompts, one needle depth, ...) live in `parts/<analysis>/<unit>.json`; `Parts.cached` returns a
saved unit instead of recomputing it, which is all `--resume` needs.

    >>> import tempfile, pathlib
    >>> parts = Parts(pathlib.Path(tempfile.mkdtemp()), "heads")
    >>> parts.cached("random-0", lambda: {"x": 1.5})
    {'x': 1.5}
    >>> parts.cached("random-0", lambda: 1 / 0)     # already done: not recomputed
    {'x': 1.5}
"""

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interp.errors import InterpError


class ScanFileError(InterpError):
    """A scan file that cannot be read (corrupt, truncated, from another schema) or written."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file + rename (readers never see a partial file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ScanFileError(f"cannot write {path}: {err.strerror or err}. Choose a writable --out "
                            "folder.") from err


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def read_json(path: Path, what: str = "file") -> Any:
    """Parse a JSON file, or raise `ScanFileError` saying which file is broken and what to do."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScanFileError(
            f"{path} is not valid JSON ({err}); the {what} is corrupt. It was left untouched: move it away "
            f"and rerun without --resume (or into a new --out folder)."
        ) from err


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Parts:
    """Finished work units of one analysis under `root/parts/<analysis>/`."""

    def __init__(self, root: Path, analysis: str):
        self.dir = Path(root) / "parts" / analysis

    def path(self, unit: str) -> Path:
        return self.dir / f"{_SAFE.sub('_', unit)}.json"

    def get(self, unit: str) -> Any | None:
        path = self.path(unit)
        return read_json(path, f"saved unit {unit!r}") if path.exists() else None

    def put(self, unit: str, data: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path(unit), data)

    def cached(self, unit: str, compute: Callable[[], Any]) -> Any:
        """The saved result of `unit`, or `compute()` saved atomically and returned as read back."""
        saved = self.get(unit)
        if saved is not None:
            return saved
        self.put(unit, compute())
        return self.get(unit)  # return the JSON round-trip, so fresh and resumed runs see identical values

    def done(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.exists() else []
