"""Token-level attention view: hover a token to see where it attends, or what attends to it.

Offline and self-contained (plain inline JS and CSS, no CDN): the same HTML works as a Jupyter
output (`_repr_html_`), inside `report.html` (the head cards) and as a static page (`save`).

    >>> with interp.capture(m, patterns=[17, 18]) as rec:                        # doctest: +SKIP
    ...     m(**m.encode([text]))
    >>> tokens = [m.tokenizer.decode([t]) for t in m.encode([text])["input_ids"][0]]   # doctest: +SKIP
    >>> attention_view(rec, [17, 18], [3, 6], tokens)   # heads 17.3 and 18.6 side by side  # doctest: +SKIP
    >>> attention_view(rec, 18, 6, tokens).save("head-18-6.html")                            # doctest: +SKIP

Size: the patterns go into the page as JSON, `heads x n x n` numbers at 4 decimals (~5 bytes
each): keep `n` to a few hundred tokens.
"""

import html as _html
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from interp.errors import InterpError


def asset(name: str) -> str:
    """The text of `interp/report/js/<name>` (the view's JS and CSS, shared with report.html)."""
    return resources.files("interp.report").joinpath("js", name).read_text(encoding="utf-8")


def script_json(obj) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


@dataclass
class AttentionView:
    """Patterns of one or more heads on one prompt, ready to render. `heads`: `{"label", "pattern"}`."""

    tokens: list[str]
    heads: list[dict]
    mode: str = "to"  # initial hover mode: "to" (where the token attends) or "from" (what attends to it)

    def data(self) -> dict:
        return {"tokens": self.tokens, "heads": self.heads, "mode": self.mode}

    def to_html(self) -> str:
        """A `<div>` with its own style and script (safe to embed several times in one page)."""
        div = f"iattn-{uuid.uuid4().hex[:12]}"
        return (f"<div id='{div}'></div><style>{asset('attention.css')}</style>"
                f"<script>{asset('attention.js')}\n"
                f"window.interpAttention(document.getElementById('{div}'), "
                f"{script_json(self.data())});</script>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def save(self, path) -> None:
        """A standalone offline HTML page."""
        from pathlib import Path

        title = _html.escape(", ".join(h["label"] for h in self.heads))
        Path(path).write_text("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>attention: "
                              f"{title}</title></head><body>{self.to_html()}</body></html>\n",
                              encoding="utf-8")


def attention_view(rec, layer: int | Sequence[int], head: int | Sequence[int], tokens: Sequence[str], *,
                   batch: int = 0, mode: str = "to") -> AttentionView:
    """Heads `(layer, head)` of a capture side by side, on prompt `batch` of the recording.

    rec: an `interp.Recording` with patterns (or a mapping layer -> `[batch, head, query, key]`).
    layer, head: one each, or lists (a single value is repeated: `layer=17, head=[3, 4]`); `head`
    indexes the recorded head axis (a capture with `Patterns(heads=[...])` keeps only those).
    tokens: the prompt's tokens as text, one per key position (padding excluded: trim them yourself).
    """
    patterns = getattr(rec, "patterns", rec)
    if not isinstance(patterns, Mapping):
        raise InterpError("attention_view needs a capture with patterns: `interp.capture(m, "
                          "patterns=[LAYER])`.")
    if mode not in ("to", "from"):
        raise InterpError(f"mode {mode!r}: use 'to' (where a token attends) or 'from' (what attends to it).")
    layers = [layer] if isinstance(layer, int) else list(layer)
    heads = [head] if isinstance(head, int) else list(head)
    if len(layers) != len(heads) and 1 not in (len(layers), len(heads)):
        raise InterpError(f"{len(layers)} layers and {len(heads)} heads: give one of each, or lists of one "
                          "length.")
    n = max(len(layers), len(heads))
    pairs = list(zip(layers * n if len(layers) == 1 else layers, heads * n if len(heads) == 1 else heads))
    out = []
    for lay, h in pairs:
        if lay not in patterns:
            raise InterpError(f"layer {lay} has no recorded pattern; capture it: interp.capture(m, "
                              f"patterns=[{lay}]).")
        p = patterns[lay]
        if not 0 <= h < p.shape[1] or not 0 <= batch < p.shape[0]:
            raise InterpError(f"head {h} / prompt {batch} is outside the recorded pattern of layer {lay} "
                              f"(shape {tuple(p.shape)}: batch, head, query, key).")
        m = p[batch, h].float().cpu()
        if m.shape[-1] != len(tokens):
            raise InterpError(f"{len(tokens)} tokens for a pattern over {m.shape[-1]} keys; pass one token "
                              "per key.")
        out.append({"label": f"layer {lay}, head {h}",
                    "pattern": [[round(x, 4) for x in row] for row in m.tolist()]})
    return AttentionView([str(t) for t in tokens], out, mode)
