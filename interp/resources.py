"""Where `interp` keeps files: the data it ships and the cache it fills.

`data_path(...)`: the `data/` folder shipped with the package (haystacks, sink passages, the few-shot
classification sets, the binding organism, synthesised speech; provenance in `data/README.md`). A wheel
carries it inside the package as `interp/data/`; a source checkout keeps it at the repository root.

    >>> data_path("fewshot", "sst2").is_dir()                      # doctest: +SKIP
    True

`cache_dir()`: `$INTERP_CACHE`, else `~/.cache/interp` (embedded models, dequantized once).
"""

import os
from importlib.resources import files
from pathlib import Path


def data_root() -> Path:
    """The shipped `data/` folder: inside the installed package, else beside it in a source checkout."""
    packaged = Path(str(files("interp"))) / "data"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "data"


def data_path(*parts: str) -> Path:
    """A path under the shipped `data/` folder (it may not exist: callers say what is missing)."""
    return data_root().joinpath(*parts)


def cache_dir() -> Path:
    """`$INTERP_CACHE`, else `~/.cache/interp`, with `~` expanded."""
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp")).expanduser()


__all__ = ["data_root", "data_path", "cache_dir"]
