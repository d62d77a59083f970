"""`interp.load`: one call from a model reference to a ready `interp.Model`.

    >>> m = interp.load()                                   # the embedded SmolLM2-135M-Instruct, offline
    >>> m = interp.load("path/to/hf_dir")                   # a local transformers directory
    >>> m = interp.load("model.Q4_K_M.gguf")                # a GGUF file (dequantized on load)
    >>> m = interp.load("smollm2", backend="tl")            # + m.bridge, a TransformerLens TransformerBridge
    >>> m = interp.load("smollm2", backend="nnsight")       # + m.nnsight, an nnsight LanguageModel

Every backend holds the same weights; `interp.capture` accepts each of them.
"""

import json
import os
import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from interp.errors import CorruptModelError, InterpError, ModelNotFoundError, UnsupportedArchitectureError
from interp.models import zoo
from interp.models.adapters import FAMILIES, adapter_for
from interp.models.model import Model

BACKENDS = ("hf", "tl", "nnsight")
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".index.json")



def _whisper_tiny_en(dtype, device):
    from interp.models.whisper_ct2 import embedded  # lazy: start-up

    return embedded(dtype=dtype, device=device)


# Extra embedded models: name -> function(dtype, device) -> (hf_model, tokenizer, extras dict).
EMBEDDED: dict[str, Callable] = {"whisper-tiny.en": _whisper_tiny_en}


def load(
    ref: str | os.PathLike = "smollm2",
    *,
    backend: str = "hf",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
    **from_pretrained_kwargs,
) -> Model:
    """Load a model for interpretability work (eval mode, gradients off by default in `capture`).

    Args:
        ref: "smollm2" (default, embedded), another embedded name, a local HF directory, a `.gguf`
            file, or a hub id (only where a hub is reachable).
        backend: "hf", "tl" (TransformerLens bridge) or "nnsight".
        device, dtype: where and in which precision the weights live.
        device_map: an accelerate device map ("auto", or a dict) to spread layers over devices,
            CPU and disk; overrides `device`.
    """
    if backend not in BACKENDS:
        raise InterpError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if device_map is None:
        device = check_device(device)
    name = str(ref)
    extras = {}
    if name in EMBEDDED:
        hf, tokenizer, extras = EMBEDDED[name](dtype=dtype, device=device)
    else:
        path, gguf_file = _resolve(name)
        kwargs = dict(dtype=dtype, **from_pretrained_kwargs)
        if device_map is not None:
            kwargs["device_map"] = device_map
        hf = _from_pretrained(path, gguf_file, kwargs)
        tokenizer = _tokenizer(path, gguf_file)
        if device_map is None:
            hf = hf.to(device)
    hf.eval()
    model = Model(hf, tokenizer, adapter_for(hf), name=_display_name(name), extras=extras)
    if backend == "tl":
        from transformer_lens.model_bridge import TransformerBridge

        model.bridge = TransformerBridge.boot_transformers(model.name, hf_model=hf, tokenizer=tokenizer)
        model.backend = "tl"
    elif backend == "nnsight":
        from nnsight import LanguageModel

        model.nnsight = LanguageModel(hf, tokenizer=tokenizer)
        model.backend = "nnsight"
    return model


def device_map_kwargs(device_map: str | None, device_memory: str | None = None,
                      offload_folder: str | None = None) -> dict:
    """`load` keywords for spreading a model over devices: `device_map` is "auto", "balanced",
    "balanced_low_0", "sequential" or a JSON file `{"module": device}`; `device_memory` caps each device,
    as "0=20GiB,1=20GiB,cpu=64GiB" (accelerate's `max_memory`); layers that do not fit go to
    `offload_folder` on disk.

        >>> device_map_kwargs("auto", "0=20GiB,cpu=64GiB")
        {'device_map': 'auto', 'max_memory': {0: '20GiB', 'cpu': '64GiB'}}
    """
    if device_map is None:
        if device_memory is not None:
            raise InterpError("--device-memory needs --device-map (e.g. --device-map auto).")
        return {}
    kwargs: dict = {}
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        kwargs["device_map"] = device_map
    else:
        path = Path(device_map)
        try:
            kwargs["device_map"] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InterpError(f"--device-map {device_map!r}: use auto, balanced, sequential or a JSON file "
                              f'{{"module": device}} ({err}).') from None
    if device_memory:
        try:
            pairs = [item.split("=", 1) for item in device_memory.split(",") if item.strip()]
            kwargs["max_memory"] = {(int(k) if k.strip().isdigit() else k.strip()): v.strip()
                                    for k, v in pairs}
        except ValueError:
            raise InterpError(f"--device-memory {device_memory!r}: write DEVICE=SIZE pairs, e.g. "
                              f"0=20GiB,1=20GiB,cpu=64GiB.") from None
    if offload_folder:
        kwargs["offload_folder"] = offload_folder
    return kwargs


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a `torch.device`, or a clear error when it is malformed or absent from this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InterpError(f"cannot read device {device!r}; use cpu, cuda, cuda:1 or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no GPU is visible")
            raise InterpError(f"device {device!r} is not available: {why}; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InterpError(f"device {device!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} GPU(s), "
                              f"cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InterpError(f"device {device!r} is not available here; use --device cpu.")
    return dev


def _tokenizer(path: str, gguf_file: str | None):
    """The model's tokenizer, or None for a weights-only directory (then `Model.encode` says so)."""
    try:
        return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError, TypeError):
        return None


def _display_name(ref: str) -> str:
    return zoo.ALIASES[ref].name if ref in zoo.ALIASES else ref


def _resolve(ref: str) -> tuple[str, str | None]:
    """(directory or hub id, gguf file name or None) for a model reference."""
    if ref in zoo.ALIASES:
        return str(zoo.ensure_smollm2()), None
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"{path} is a file but not a .gguf model; pass a .gguf file or an HF "
                                     "directory.")
        zoo.check_gguf(path)
        return str(path.parent), path.name
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} has no config.json; pass a transformers model directory "
                                     f"(as written by save_pretrained) or a .gguf file.")
        _check_family(str(path))  # an architecture interp cannot capture is refused first, weights or not
        if not any(next(path.glob(f"*{ext}"), None) for ext in WEIGHT_FILES):
            raise CorruptModelError(f"{path} has a config.json but no weights ({', '.join(WEIGHT_FILES)} "
                                    "files); finish the download or save the model again with "
                                    "save_pretrained.")
        return str(path), None
    if _looks_like_path(ref):
        raise ModelNotFoundError(
            f"no model at {path}: the path does not exist. Pass an existing HF directory or .gguf file, or "
            f"use the embedded default with interp.load('smollm2')."
        )
    return _hub(ref), None


def _looks_like_path(ref: str) -> bool:
    return (ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or ref.count("/") > 1
            or os.sep + os.sep in ref)


def _hub(ref: str) -> str:
    try:
        AutoConfig.from_pretrained(ref, local_files_only=True)
        _check_family(ref)
        return ref
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise ModelNotFoundError(
            f"{ref!r} is not a local path and the Hugging Face hub cannot be reached from here. "
            "Alternatives: interp.load('smollm2') (embedded, offline), a local HF directory, or a .gguf "
            "file."
        )
    _check_family(ref)
    return ref


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _check_family(path: str) -> None:
    """Refuse, before any weight is read, a model whose attention interp cannot capture exactly."""
    config = _config(path)
    if config.model_type in FAMILIES:
        return
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    try:
        with torch.device("meta"):  # the module tree without weights: enough to infer an adapter
            skeleton = auto.from_config(config)
    except Exception:  # transformers cannot build it here; from_pretrained will say why
        return
    adapter_for(skeleton)  # raises UnsupportedArchitectureError with the reason


def _config(path: str, gguf_file: str | None = None):
    """The model's transformers config, or a one-line error saying why it cannot be read."""
    try:
        return AutoConfig.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (ValueError, KeyError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "model_type" in str(err) or "does not recognize" in str(err):
            raise UnsupportedArchitectureError(
                f"{path}: this transformers version does not know the model's architecture ({detail}); "
                f"check config.json's model_type or upgrade transformers.") from None
        raise CorruptModelError(f"{path}: its config cannot be read ({detail}).") from None
    except OSError as err:
        if isinstance(err, FileNotFoundError) or "not a valid JSON" in str(err) or "JSON" in str(err):
            raise CorruptModelError(f"{path}: config.json cannot be read ({str(err).splitlines()[0]}); "
                                    f"download or save the model again.") from None
        raise


@contextmanager
def _quiet_loading():
    """transformers' own "Loading weights" bar off while interp loads (the caller's setting is restored)."""
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _from_pretrained(path: str, gguf_file: str | None, kwargs: dict) -> PreTrainedModel:
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    config = _config(path, gguf_file)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    try:
        with _quiet_loading():
            model = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, EOFError, KeyError, SafetensorError) as err:
        raise CorruptModelError(f"cannot read the weights of {gguf_file or path} ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else 'no detail'}); the files are "
                                "truncated or not a model of this config: download or save them "
                                "again.") from err
    if gguf_file:  # dequantized in memory: plain weights from here on
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model
