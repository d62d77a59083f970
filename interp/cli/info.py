"""Summarise a model and what its attention heads do on a sample prompt.

    interp info                      # the embedded SmolLM2-135M-Instruct
    interp info path/to/model --prompt "The quick brown fox jumps over the lazy dog."
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_PROMPT = ("When Mary and John went to the store, John gave a drink to Mary. "
                  "The store was closed on Sunday.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="smollm2",
                        help="embedded name, local directory or .gguf file")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text to run through the model")
    parser.add_argument("--backend", default="hf", help="hf, tl or nnsight (interp.models.BACKENDS)")
    parser.add_argument("--device", default="cpu")


def attention_summary(patterns: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head summaries of one layer's `[1, head, query, key]` pattern (no padding)."""
    import torch  # lazy: start-up

    p = patterns[0]
    n = p.shape[-1]
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean(-1)
    first = p[:, 1:, 0].mean(-1)  # attention on the first token, from every later query
    prev = torch.diagonal(p, offset=-1, dim1=-2, dim2=-1).mean(-1) if n > 1 else torch.zeros(p.shape[0])
    return {"entropy": entropy, "first_token": first, "previous_token": prev}


def run(args: argparse.Namespace) -> int:
    # lazy: start-up
    from rich.console import Console
    from rich.table import Table

    import interp
    from interp.axes import head_label

    console = Console()
    with console.status(f"loading {args.model} ..."):
        model = interp.load(args.model, backend=args.backend, device=args.device)
    table = Table(title=f"{model.name}", show_header=False)
    for key, value in model.summary().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)

    batch = model.encode([args.prompt])
    with console.status("capturing every head's attention ..."):
        with interp.capture(model, patterns=True) as rec:
            if model.backend == "tl":
                model.bridge(batch["input_ids"])
            else:
                model(**batch)
    heads = Table(title=f"attention on a {batch['input_ids'].shape[1]}-token prompt (per layer, over heads)")
    for col in ("layer", "mean entropy (nats)", "first-token mass", "top previous-token head"):
        heads.add_column(col, justify="right")
    for layer in range(model.adapter.n_layers()):
        s = attention_summary(rec.patterns[layer])
        best = int(s["previous_token"].argmax())
        heads.add_row(str(layer), f"{s['entropy'].mean():.2f}", f"{s['first_token'].mean():.2f}",
                      f"{head_label(layer, best)} ({s['previous_token'][best]:.2f})")
    console.print(heads)
    return 0
