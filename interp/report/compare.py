"""Two scans of one architecture side by side: per-head score differences, roles gained / lost, summary
deltas.

    >>> diff = compare_scans(load_scan("runs/base"), load_scan("runs/calibrated"))      # doctest: +SKIP
    >>> diff["metrics"]["heads.induction"]["top"][0]                                   # doctest: +SKIP
    {'head': '13.5', 'a': 0.12, 'b': 0.05, 'delta': -0.07}
    >>> Path("compare.html").write_text(render_compare(diff))                          # doctest: +SKIP

Differences are B - A. Summary numbers with per-trial data (retrieval: recall per NIAH trial;
sinks: Sink1 and hidden-sink rates per prompt) get a 95% percentile bootstrap interval of the paired
mean difference (scipy.stats.bootstrap, 2000 resamples, seed 0); the trials are paired by id / prompt
index, which holds when both scans used the same settings.
"""

import html as _html

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from interp.axes import head_label
from interp.errors import InterpError
from interp.report.atlas import atlas

ARCH_FIELDS = ("n_layers", "n_heads", "n_kv_heads", "head_dim", "d_model")


class CompareError(InterpError):
    """Two scans that cannot be compared (another architecture, no analysis in common)."""


def _paired_ci(a, b, seed: int = 0) -> tuple[float, float]:
    from scipy.stats import bootstrap

    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(d) < 2 or np.ptp(d) == 0:
        return float(d.mean()), float(d.mean())
    res = bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _per_trial(name: str, summary: dict) -> dict[str, tuple[list, list | None]]:
    """Per-trial samples of an analysis summary: name -> (values, ids or None)."""
    if name == "retrieval" and "per_trial" in summary:
        return {"recall": (summary["per_trial"]["recall"], summary["per_trial"]["id"])}
    if name == "sinks" and "per_prompt" in summary:
        return {k: (v, None) for k, v in summary["per_prompt"].items()}
    return {}


def compare_scans(a: dict, b: dict, names: tuple[str, str] = ("A", "B"), top: int = 10) -> dict:
    """The comparison as plain data (what `render_compare` and `interp compare` print)."""
    ma, mb = a["model"], b["model"]
    wrong = [f"{f} {ma.get(f)} ({names[0]}) vs {mb.get(f)} ({names[1]})" for f in ARCH_FIELDS
             if ma.get(f) != mb.get(f)]
    if wrong:
        raise CompareError(f"cannot compare scans of different architectures: {', '.join(wrong)}. Compare "
                           f"scans of one model (e.g. base vs `interp scan --calibration FILE`).")
    common = [n for n in a["analyses"] if n in b["analyses"]]
    if not common:
        raise CompareError(f"the scans share no analysis ({names[0]}: {', '.join(a['analyses']) or 'none'}; "
                           f"{names[1]}: {', '.join(b['analyses']) or 'none'}); rerun one with --analyses.")
    notes = []
    for n, doc in ((names[0], a), (names[1], b)):
        only = [x for x in doc["analyses"] if x not in common]
        if only:
            notes.append(f"only in {n}, not compared: {', '.join(only)}")
    for n in common:
        ca, cb = a["settings"]["config"].get(n), b["settings"]["config"].get(n)
        if ca != cb:
            keys = sorted(k for k in set(ca or {}) | set(cb or {}) if (ca or {}).get(k) != (cb or {}).get(k))
            notes.append(f"{n}: settings differ ({', '.join(keys)}): differences mix model and settings")
    if ma.get("fingerprint") != mb.get("fingerprint"):
        notes.append(f"the weights differ (fingerprint {ma.get('fingerprint')} vs {mb.get('fingerprint')})")
    calib = [(n, d["settings"].get("calibration")) for n, d in ((names[0], a), (names[1], b))]
    metrics = {}
    for n in common:
        for key, m in a["analyses"][n]["metrics"].items():
            other = b["analyses"][n]["metrics"].get(key)
            if other is None:
                continue
            sa, sb = np.array(m["scores"], dtype=float), np.array(other["scores"], dtype=float)
            if sa.shape != sb.shape:
                notes.append(f"{n}.{key}: shapes differ {sa.shape} vs {sb.shape}, not compared")
                continue
            d = sb - sa
            cols = m.get("columns")
            order = np.argsort(-np.abs(d), axis=None, kind="stable")[:top]
            rows = [{"head": f"{i // d.shape[1]}.{cols[i % d.shape[1]] if cols else i % d.shape[1]}",
                     "a": float(sa.flat[i]), "b": float(sb.flat[i]), "delta": float(d.flat[i])}
                    for i in order if d.flat[i] != 0]
            metrics[f"{n}.{key}"] = {"delta": d.tolist(),
                                     "max_abs": float(np.abs(d).max()) if d.size else 0.0,
                                     "n_changed": int((d != 0).sum()), "columns": cols, "top": rows,
                                     "role": m["role"], "threshold": m.get("threshold")}
    def common_only(doc):  # roles from the compared analyses only
        return {**doc, "analyses": {n: doc["analyses"][n] for n in common}}

    ra, rb = atlas(common_only(a)).roles, atlas(common_only(b)).roles
    roles = []
    for label in ra:
        gained = [r for r in rb.get(label, []) if r not in ra[label]]
        lost = [r for r in ra[label] if r not in rb.get(label, [])]
        if gained or lost:
            roles.append({"head": label, "gained": gained, "lost": lost})
    summary = []
    for n in common:
        sa, sb = a["analyses"][n].get("summary") or {}, b["analyses"][n].get("summary") or {}
        for k, v in sa.items():
            if (isinstance(v, (int, float)) and not isinstance(v, bool)
                    and isinstance(sb.get(k), (int, float))):
                summary.append({"analysis": n, "name": k, "a": v, "b": sb[k], "delta": sb[k] - v,
                                "ci95": None})
        ta, tb = _per_trial(n, sa), _per_trial(n, sb)
        for k, (va, ids_a) in ta.items():
            vb, ids_b = tb.get(k, (None, None))
            if ids_a and ids_b and sorted(ids_a) == sorted(ids_b):  # pair trials by id
                where = {t: i for i, t in enumerate(ids_b)}
                vb, ids_b = [vb[where[t]] for t in ids_a], ids_a
            if vb is None or len(va) != len(vb) or ids_a != ids_b:
                notes.append(f"{n}.{k}: per-trial data not paired (other trials), no interval")
                continue
            summary.append({"analysis": n,
                            "name": f"mean {k} per {'trial' if ids_a else 'prompt'} (n={len(va)})",
                            "a": float(np.mean(va)), "b": float(np.mean(vb)),
                            "delta": float(np.mean(vb) - np.mean(va)), "ci95": _paired_ci(va, vb)})
    return {"names": list(names), "models": [ma["name"], mb["name"]], "calibration": calib, "notes": notes,
            "analyses": common, "metrics": metrics, "roles": roles, "summary": summary,
            "n_layers": ma["n_layers"], "n_heads": ma["n_heads"]}


def changed_heads(diff: dict, metric: str | None = None) -> set[tuple[int, int]]:
    """(layer, head) pairs whose score changed in `metric` (or in any per-head metric)."""
    out = set()
    for key, m in diff["metrics"].items():
        if m["columns"] or (metric is not None and key != metric):
            continue
        out |= {(i, j) for i, row in enumerate(m["delta"]) for j, v in enumerate(row) if v != 0}
    return out


def _esc(x) -> str:
    return _html.escape(str(x), quote=True)


def _fmt(v) -> str:
    return f"{v:+.4g}" if isinstance(v, float) else str(v)


def _ci(ci) -> str:
    return f"[{ci[0]:+.4g}, {ci[1]:+.4g}]" if ci else ""


def text_summary(diff: dict) -> str:
    """What `interp compare` prints."""
    a, b = diff["names"]
    lines = [f"{a}: {diff['models'][0]}  vs  {b}: {diff['models'][1]}   (differences are {b} - {a})"]
    lines += [f"note: {n}" for n in diff["notes"]]
    for key, m in diff["metrics"].items():
        tops = ", ".join(f"{r['head']} {r['delta']:+.3f}" for r in m["top"][:5]) or "no change"
        lines.append(f"{key:34s} max |d| {m['max_abs']:.4f}  changed {m['n_changed']:4d}   {tops}")
    for r in diff["roles"]:
        lines.append(f"head {r['head']:6s} gained {', '.join(r['gained']) or '-'}; lost "
                     f"{', '.join(r['lost']) or '-'}")
    for s in diff["summary"]:
        ci = f"  95% CI {_ci(s['ci95'])}" if s["ci95"] else ""
        lines.append(f"{s['analysis']}: {s['name']}: {s['a']:.4g} -> {s['b']:.4g} "
                     f"({_fmt(float(s['delta']))}){ci}")
    return "\n".join(lines)


def render_compare(diff: dict) -> str:
    """An offline HTML page: notes, summary deltas with CIs, roles gained / lost, one diff heatmap per
    metric."""
    a, b = diff["names"]
    figs = []
    for key, m in diff["metrics"].items():
        z = m["delta"]
        lim = max(m["max_abs"], 1e-12)
        fig = go.Figure(go.Heatmap(z=z, x=m["columns"] or list(range(len(z[0]) if z else 0)),
                                   y=list(range(len(z))), colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                                   colorbar={"title": {"text": "B - A"}},
                                   hovertemplate="layer %{y}, %{x}<br>delta %{z:.4f}<extra></extra>"))
        fig.update_layout(title={"text": f"{key}: {b} - {a} (max |d| {m['max_abs']:.4f}, {m['n_changed']} "
                                         "changed)"},
                          xaxis={"title": {"text": "column" if m["columns"] else "head"}, "type": "category"},
                          yaxis={"title": {"text": "layer"}, "autorange": "reversed"},
                          height=max(320, 14 * len(z) + 140), margin={"t": 60, "l": 60, "r": 20, "b": 50})
        figs.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                div_id=f"diff-{key.replace('.', '-')}", config={"displaylogo": False}))
    summ = "".join(f"<tr><td>{_esc(s['analysis'])}</td><td>{_esc(s['name'])}</td><td>{s['a']:.4g}</td>"
                   f"<td>{s['b']:.4g}</td><td>{_esc(_fmt(float(s['delta'])))}</td><td>{_ci(s['ci95'])}</td></tr>"
                   for s in diff["summary"])
    roles = "".join(f"<tr><td>{_esc(r['head'])}</td><td>{_esc(', '.join(r['gained']))}</td>"
                    f"<td>{_esc(', '.join(r['lost']))}</td></tr>" for r in diff["roles"])
    notes = "".join(f"<li>{_esc(n)}</li>" for n in diff["notes"])
    def calibration(c) -> str:
        return "calibrated heads " + ", ".join(head_label(*h) for h in c["heads"]) if c else "no calibration"

    cal = "".join(f"<li>{_esc(n)}: {calibration(c)}</li>" for n, c in diff["calibration"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interp compare: {_esc(a)} vs {_esc(b)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}}
table{{border-collapse:collapse;font-size:13px}} td,th{{padding:2px 8px;border-bottom:1px solid
#eee;text-align:left}}
.note{{color:#666;font-size:13px}}</style>
<script>{get_plotlyjs()}</script></head><body>
<h1>interp compare</h1>
<p>A = <b>{_esc(a)}</b> ({_esc(diff['models'][0])}), B = <b>{_esc(b)}</b> ({_esc(diff['models'][1])});
differences are
B - A, over the analyses both scans hold: {_esc(', '.join(diff['analyses']))}.</p>
<ul class="note">{cal}{notes}</ul>
<h2>Summary numbers</h2>
<p class="note">95% CI: percentile bootstrap of the paired per-trial difference (where the analysis keeps
per-trial
data; see docs/report.md).</p>
<table id="summary"><thead><tr><th>analysis</th><th>number</th><th>A</th><th>B</th><th>B - A</th><th>95%
CI</th></tr>
</thead><tbody>{summ}</tbody></table>
<h2>Heads that gained or lost a role</h2>
<table
id="roles"><thead><tr><th>head</th><th>gained</th><th>lost</th></tr></thead><tbody>{roles}</tbody></table>
{'' if roles else "<p class='note'>None.</p>"}
<h2>Per-head differences</h2>
{''.join(figs)}
</body></html>
"""
