"""`report.html`: one self-contained, offline page for a scan (plotly.js and all JS inline, no CDN).

Sections: the model and settings; the head atlas (one row per head, every per-head score, roles
by threshold; sortable, filterable; click a head for its card: scores, ranks, its attention on
the example prompt); Spearman correlations between analyses with a scatter per pair; then one
section per analysis saying what it measured (settings, trial counts, 95% intervals, the doc
defining the metric) above its layer x head heatmap.

    >>> from interp.scan import load_scan                          # doctest: +SKIP
    >>> html = render_html(load_scan("runs/smollm2"))              # doctest: +SKIP

Size: plotly.js is ~4.6 MB of the page; a full SmolLM2 scan adds ~1.5 MB (patterns of 270 heads
on the ~30-token example prompt, the atlas).
"""

import html as _html
import json
from pathlib import Path

import plotly.io as pio
from plotly.offline import get_plotlyjs

from interp.axes import head_label
from interp.report.atlas import Atlas, atlas, spearman_matrix
from interp.report.attention import asset, script_json
from interp.report.figures import heatmap
from interp.report.measured import DOCS, measured

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd} h3{font-size:15px}
table{border-collapse:collapse;font-size:12px} td,th{padding:2px 6px;border-bottom:1px solid
#eee;text-align:left}
th.sortable{cursor:pointer;user-select:none;position:sticky;top:0;background:#fafafa}
th.sortable:hover{background:#eee}
th[data-order=desc]::after{content:' \\25BC'} th[data-order=asc]::after{content:' \\25B2'}
#atlas tbody tr{cursor:pointer} #atlas tbody tr:hover{background:#f4f8fc} #atlas tbody tr.sel{outline:2px
solid #1f77b4}
#atlas td.n{text-align:right;font-variant-numeric:tabular-nums}
.meta td:first-child{color:#666} .note{color:#666;font-size:13px} .scroll{max-height:520px;overflow:auto}
.card{border:1px solid #ccc;border-radius:6px;padding:10px 14px;margin:12px 0;background:#fcfcfc}
.measured{font-size:13px;margin:4px 0 8px 0} .measured li{margin:1px 0}
#corr-table td{text-align:center;cursor:pointer;min-width:34px} #corr-table
th{font-weight:normal;font-size:11px}
"""

_ABBREV = {"previous_token": "prev", "duplicate_token": "dup", "induction": "ind",
           "previous_token_text": "prev-t", "duplicate_token_text": "dup-t", "induction_text": "ind-t",
           "entropy": "entropy", "mean_distance": "dist", "first_token_alpha": "sink α",
           "sink_rate": "sink rate", "hidden_sinks": "hidden", "retrieval": "retrieval", "pearson": "sal. r",
           "spearman": "sal. ρ", "binding_layer_effect": "binding"}


def _esc(x) -> str:
    return _html.escape(str(x), quote=True)


def _doc_link(name: str) -> str:
    rel = DOCS.get(name, "docs/report.md")
    path = Path(__file__).resolve().parents[2] / rel
    if path.exists():
        return f"<a href='{_esc(path.as_uri())}' title='{_esc(rel)} in the interp repository'>{_esc(rel)}</a>"
    return f"<code>{_esc(rel)}</code> (interp repository)"


def _meta_table(doc: dict) -> str:
    m, s = doc["model"], doc["settings"]
    rows = [("model", m["name"]), ("class / family", f"{m['class']} / {m['family']}"),
            ("layers x heads",
             f"{m['n_layers']} x {m['n_heads']} (kv heads {m['n_kv_heads']}, head_dim {m['head_dim']})"),
            ("parameters", f"{m['parameters']:,}"), ("dtype / device", f"{s['dtype']} / {s['device']}"),
            ("fingerprint", m["fingerprint"]), ("analyses", ", ".join(s["analyses"])),
            ("status", doc["status"]),
            ("interp", f"{doc['interp_version']} (scan schema v{doc['schema_version']})")]
    cal = s.get("calibration")
    if cal:
        heads = ", ".join(head_label(a, b) for a, b in cal["heads"])
        rows.insert(5, ("calibration", f"ACT, beta {cal['beta']}, tau {cal['tau']}, heads {heads}"))
    body = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    settings = _esc(json.dumps(s["config"], indent=1))
    return (f"<table class='meta'>{body}</table><details><summary class='note'>analysis settings</summary>"
            f"<pre>{settings}</pre></details>")


def _shade(score: float, lo: float, hi: float) -> str:
    a = 0.0 if hi <= lo else (score - lo) / (hi - lo)
    return f" style='background:rgba(31,119,180,{0.55 * a:.2f})'" if a > 0.05 else ""


def _atlas_table(a: Atlas) -> str:
    head = ["<th class='sortable' data-type='num' title='layer.head'>head</th>",
            "<th class='sortable' data-type='str'>roles</th>"]
    for c in a.columns:
        thr = "" if c.threshold is None else f" (role over {c.threshold})"
        head.append(f"<th class='sortable' data-type='num' data-key='{_esc(c.key)}' "
                    f"title='{_esc(c.key)}: "
                    f"{_esc(c.description)}{_esc(thr)}'>{_esc(_ABBREV.get(c.metric, c.metric))}</th>")
    ranges = [(min(c.scores), max(c.scores)) for c in a.columns]
    body = []
    for i, label in enumerate(a.labels):
        layer, h = map(int, label.split("."))
        roles = a.roles[label]
        cells = [f"<td data-v='{layer * 1000 + h}'>{label}</td>", f"<td>{_esc(', '.join(roles))}</td>"]
        cells += [f"<td class='n' data-v='{c.scores[i]:.6g}'{_shade(c.scores[i], *r)}>{c.scores[i]:.3f}</td>"
                  for c, r in zip(a.columns, ranges)]
        search = _esc(f"{label} " + " ".join(roles).lower())
        body.append(f"<tr data-head='{label}' data-roles='{_esc('|'.join(roles))}' data-search='{search}'>"
                    + "".join(cells) + "</tr>")
    role_names = sorted({r for rs in a.roles.values() for r in rs})
    options = "".join(f"<option value='{_esc(r)}'>{_esc(r)} "
                      f"({sum(r in rs for rs in a.roles.values())})</option>"
                      for r in role_names)
    return (f"<p><label>filter: <input id='atlas-filter' placeholder='18.6, induction, sink ...'></label> "
            f"<label>role: <select id='atlas-role'><option value=''>any</option>{options}</select></label> "
            f"<span id='atlas-count' class='note'></span></p>"
            f"<div class='scroll'><table id='atlas'><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _card(doc: dict) -> str:
    ex = doc.get("examples") or {}
    prompt = _esc(ex.get("prompt", ""))
    return (f"<div id='head-card' class='card' hidden><h3 id='card-title'></h3>"
            f"<div>roles: <b id='card-roles'></b></div>"
            "<table "
            f"id='card-scores'><thead><tr><th>metric</th><th>score</th><th>rank</th><th>role</th></tr></thead><tbody></tbody></table>"
            f"<p class='note'>Attention on the example prompt ({len(ex.get('tokens', []))} tokens): "
            f"<q>{prompt}</q>. <label>also show heads: <input id='card-compare' placeholder='17.3, 18.6' "
            f"size='14'></label></p><div id='card-attention'></div></div>")


def _corr(a: Atlas) -> tuple[str, dict]:
    rho = spearman_matrix(a)
    keys = [c.key for c in a.columns]
    if len(keys) < 2:
        return ("<p class='note'>One per-head metric only: nothing to correlate.</p>",
                {"keys": keys, "rho": rho})
    head = "".join(f"<th title='{_esc(k)}'>{_esc(_ABBREV.get(c.metric, c.metric))}</th>"
                   for k, c in zip(keys, a.columns))
    rows = []
    for i, c in enumerate(a.columns):
        cells = []
        for j in range(len(keys)):
            r = rho[i][j]
            color = "" if r is None else (f"background:rgba(31,119,180,{abs(r) * 0.7:.2f})" if r > 0
                                          else f"background:rgba(214,39,40,{abs(r) * 0.7:.2f})")
            cells.append(f"<td data-x='{_esc(keys[j])}' data-y='{_esc(keys[i])}' style='{color}' "
                         f"title='{_esc(keys[i])} vs {_esc(keys[j])}'>{'' if r is None else f'{r:.2f}'}</td>")
        name = _esc(_ABBREV.get(c.metric, c.metric))
        rows.append(f"<tr><th title='{_esc(c.key)}'>{name}</th>{''.join(cells)}</tr>")
    pick = [k for k in ("heads.induction", "retrieval.retrieval") if k in keys]
    x0, y0 = (pick + keys[:2])[:2] if len(pick) < 2 else pick
    options = "".join(f"<option value='{_esc(k)}'>{_esc(k)}</option>" for k in keys)
    html = (f"<p class='note'>Spearman rank correlation over all {len(a.labels)} heads "
            f"(scipy.stats.spearmanr); click a cell for its scatter, a dot for its head card.</p>"
            f"<div class='scroll'><table id='corr-table'><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
            f"<p><label>x <select id='corr-x'>{options}</select></label> "
            f"<label>y <select id='corr-y'>{options}</select></label></p><div id='corr-scatter'></div>")
    return html, {"keys": keys, "rho": rho, "x0": x0, "y0": y0}


def _examples(doc: dict) -> dict:
    """Example patterns as integers (x 10000): the largest payload of the page, kept compact."""
    ex = doc.get("examples") or {"tokens": [], "heads": {}}
    heads = {lab: [[round(v * 10000) for v in row] for row in h["pattern"]] for lab, h in ex["heads"].items()}
    rows = next(iter(ex["heads"].values()))["cols"] if ex["heads"] else None
    return {"tokens": ex.get("tokens", []), "rows": rows, "scale": 10000, "heads": heads}


def _summary(summary: dict) -> str:
    """Scalars inline; nested values (tables, per-prompt lists) folded into <details>."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    flat = [f"{_esc(k)} = {_esc(fmt(v))}" for k, v in summary.items() if not isinstance(v, (dict, list))]
    nested = {k: v for k, v in summary.items() if isinstance(v, (dict, list))}
    more = (f"<details><summary>details</summary><pre>{_esc(json.dumps(nested, indent=1))}</pre></details>"
            if nested else "")
    return f"<div class='note'>summary: {'; '.join(flat)}{more}</div>"


def _section(name: str, result: dict, doc: dict, figs: dict) -> str:
    """One analysis: what it measured, then its heatmap (drawn by report.js after the page has loaded)."""
    lines = measured(name, result, doc["settings"]["config"].get(name))
    items = "".join(f"<li>{_esc(x)}</li>" for x in lines)
    div = f"heatmap-{name}"
    figs[div] = json.loads(pio.to_json(heatmap(name, result)))
    return (f"<section id='analysis-{_esc(name)}'><h3>{_esc(name)}</h3>"
            f"<ul class='measured'>{items}<li>metric defined in {_doc_link(name)}</li></ul>"
            f"<div id=\"{_esc(div)}\" class='heatmap'></div>"
            f"{_summary(result['summary']) if result.get('summary') else ''}</section>")


def render_html(doc: dict) -> str:
    """The whole report as one HTML string (no external resources)."""
    name = doc["model"]["name"]
    a = atlas(doc)
    corr_html, corr = _corr(a)
    data = {"labels": a.labels, "roles": a.roles,
            "columns": [{"key": c.key, "metric": c.metric, "role": c.role, "threshold": c.threshold,
                         "scores": [round(s, 6) for s in c.scores], "ranks": c.ranks()} for c in a.columns]}
    figs: dict = {}
    sections = "".join(_section(n, r, doc, figs) for n, r in doc["analyses"].items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interp scan: {_esc(name)}</title>
<style>{_CSS}{asset('attention.css')}</style>
<script>{get_plotlyjs()}</script>
<script>const ATLAS = {script_json(data)};
const EX = {script_json(_examples(doc))};
const CORR = {script_json(corr)};
const FIGS = {script_json(figs)};</script>
<script>{asset('attention.js')}
{asset('report.js')}</script>
</head><body>
<h1>interp scan: {_esc(name)}</h1>
{_meta_table(doc)}
<h2>Head atlas</h2>
<p class="note">One row per head ({len(a.labels)}), every per-head score of this scan. Click a column
header to
sort (first click: highest first), a row for the head's card. A head takes a metric's role when its score
is above
the metric's threshold (hover a header for the metric and threshold; see {_doc_link('atlas')}).</p>
{_card(doc)}
{_atlas_table(a) if a.columns else "<p class='note'>No per-head analysis finished yet.</p>"}
<h2>Correlations between analyses</h2>
{corr_html}
<h2>Analyses: what each measured</h2>
{sections or "<p class='note'>No analysis finished yet.</p>"}
</body></html>
"""
