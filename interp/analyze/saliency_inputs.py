"""Saliency of several inputs at once (text prompts and `.wav` files), one input per work unit.

Each input is explained on its own (`explain_text` / `explain_speech`), so the reports do not
depend on which inputs ran before. Under torchrun (`interp.parallel.init()` first) the inputs are
dealt to the ranks and the reports come back to every rank in input order: the same list one
process returns.

    >>> reports = explain_inputs(m, ["The capital of France is", "Water boils at"])   # doctest: +SKIP
    >>> pooled_table(reports)["all_heads"].pearson                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from interp.analyze.agreement import SaliencyReport
from interp.analyze.saliency import SaliencyConfig, explain_speech, explain_text
from interp.errors import InterpError
from interp.models.model import as_model
from interp.parallel import check_same, check_work, is_main, map_units
from interp.progress import bar
from interp.tasks.speech import load_wav

__all__ = ["explain_inputs", "is_audio"]


def is_audio(item: str) -> bool:
    """An input naming a `.wav` file is audio; anything else is a text prompt."""
    return item.lower().endswith(".wav")


def explain_inputs(
    model,
    inputs: Sequence[str],
    *,
    max_new_tokens: int | None = None,
    config: SaliencyConfig | None = None,
    chat: bool = False,
    progress: bool = False,
) -> list[SaliencyReport]:
    """One `SaliencyReport` per input: text prompts through `explain_text`, `.wav` files through
    `explain_speech` (speech models). `max_new_tokens` defaults to 8 for text, 64 for speech.
    """
    cfg = config or SaliencyConfig()
    m = as_model(model)
    if not inputs:
        raise InterpError("no inputs to explain; give at least one text prompt or .wav file.")
    for item in inputs:
        if is_audio(item) and not m.hf.config.is_encoder_decoder:
            raise InterpError(f"{item} is audio but {m.name} is a text model; give a text prompt.")
    check_same({"inputs": list(inputs), "max_new_tokens": max_new_tokens, "config": repr(cfg), "chat": chat,
                "model": m.name}, "saliency settings")
    check_work(len(inputs), "inputs", "give more inputs")

    local = replace(cfg, show_progress=cfg.show_progress and is_main())  # rank 0 alone draws captum's bars

    def unit(item: str) -> dict:
        if is_audio(item):
            report = explain_speech(m, load_wav(item), max_new_tokens=max_new_tokens or 64, config=local)
        else:
            report = explain_text(m, item, max_new_tokens=max_new_tokens or 8, config=local, chat=chat)
        return dict(vars(report))  # a dict: its tensors travel between ranks on CPU

    with bar(enabled=progress and is_main()) as display:
        job = display.add_task("saliency", total=len(inputs))
        done = map_units(unit, list(inputs), on_done=lambda i, r: display.advance(job))
    return [SaliencyReport(**d) for d in done]

