"""`report.html`: one self-contained, offline page for a scan (plotly.js embedded, no CDN).

Sections: the model and settings, a layer x head heatmap per analysis (dropdown: metric), a
sortable table of the top heads with their roles, and a per-head drill-down (its scores in every
metric and its downsampled attention pattern on the example prompt).

    >>> from interp.scan import load_scan                          # doctest: +SKIP
    >>> html = render_html(load_scan("runs/smollm2"))              # doctest: +SKIP

Size: plotly.js is ~4.6 MB of the page; the scores and examples add a few hundred KB.
"""

import html as _html
import json

import plotly.io as pio
from plotly.offline import get_plotlyjs

from interp.report.figures import heatmap, pattern_figure, top_heads

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
th.sortable{cursor:pointer;user-select:none} th.sortable:hover{background:#f3f3f3}
.meta td:first-child{color:#666} .note{color:#666;font-size:13px} .scroll{max-height:480px;overflow:auto}
"""

_SCRIPT = """
function sortTable(th){
  const table=th.closest('table'), body=table.tBodies[0], col=th.cellIndex;
  const asc=th.dataset.order!=='asc'; th.dataset.order=asc?'asc':'desc';
  const num=th.dataset.type==='num';
  const rows=Array.from(body.rows).sort((a,b)=>{
    let x=a.cells[col].dataset.v??a.cells[col].textContent, y=b.cells[col].dataset.v??b.cells[col].textContent;
    if(num){x=parseFloat(x);y=parseFloat(y);} return (x<y?-1:x>y?1:0)*(asc?1:-1);});
  rows.forEach(r=>body.appendChild(r));
}
function showHead(label){
  const fig=DRILL.figures[label], rows=DRILL.scores[label]||[];
  if(fig){Plotly.react('drill-pattern',fig.data,fig.layout,{displaylogo:false});}
  const tb=document.getElementById('drill-scores').tBodies[0]; tb.innerHTML='';
  rows.forEach(r=>{const tr=tb.insertRow(); r.forEach(c=>{tr.insertCell().textContent=c;});});
}
document.addEventListener('DOMContentLoaded',()=>{
  document.querySelectorAll('th.sortable').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
  const sel=document.getElementById('head-select');
  if(sel){sel.addEventListener('change',()=>showHead(sel.value)); if(sel.value){showHead(sel.value);}}
});
"""


def _esc(x) -> str:
    return _html.escape(str(x))


def _script_json(obj) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj).replace("</", "<\\/")


def _meta_table(doc: dict) -> str:
    m, s = doc["model"], doc["settings"]
    rows = [("model", m["name"]), ("class / family", f"{m['class']} / {m['family']}"),
            ("layers x heads", f"{m['n_layers']} x {m['n_heads']} (kv heads {m['n_kv_heads']}, head_dim {m['head_dim']})"),
            ("parameters", f"{m['parameters']:,}"), ("dtype / device", f"{s['dtype']} / {s['device']}"),
            ("fingerprint", m["fingerprint"]), ("analyses", ", ".join(s["analyses"])),
            ("status", doc["status"]), ("interp", f"{doc['interp_version']} (scan schema v{doc['schema_version']})")]
    body = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    settings = _esc(json.dumps(s["config"], indent=1))
    return (f"<table class='meta'>{body}</table><details><summary class='note'>analysis settings</summary>"
            f"<pre>{settings}</pre></details>")


def _table(rows: list[dict]) -> str:
    cols = [("analysis", "str"), ("metric", "str"), ("rank", "num"), ("layer", "num"), ("head", "num"),
            ("score", "num"), ("role", "str")]
    head = "".join(f"<th class='sortable' data-type='{t}'>{c}</th>" for c, t in cols)
    body = []
    for r in rows:
        cells = []
        for c, t in cols:
            v = r[c]
            text = f"{v:.4f}" if c == "score" else v
            data = f" data-v='{_esc(v)}'" if t == "num" and isinstance(v, (int, float)) else ""
            cells.append(f"<td{data}>{_esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table id='top-heads'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _drill(doc: dict) -> tuple[str, dict]:
    ex = doc.get("examples") or {"heads": {}, "tokens": []}
    labels = list(ex["heads"])
    figures = {lab: json.loads(pio.to_json(pattern_figure(lab, ex["heads"][lab], ex["tokens"]))) for lab in labels}
    scores = {}
    for lab in labels:
        layer, head = map(int, lab.split("."))
        rows = []
        for name, result in doc["analyses"].items():
            for key, m in result["metrics"].items():
                if m.get("columns") or layer >= len(m["scores"]) or head >= len(m["scores"][layer]):
                    continue
                flat = sorted((s for row in m["scores"] for s in row), reverse=True)
                score = m["scores"][layer][head]
                rows.append([name, key, f"{score:.4f}", f"{flat.index(score) + 1} / {len(flat)}", m["role"]])
        scores[lab] = rows
    if not labels:
        return "<p class='note'>No drill-down examples in this scan.</p>", {"figures": {}, "scores": {}}
    options = "".join(f"<option value='{_esc(lab)}'>layer {lab.split('.')[0]}, head {lab.split('.')[1]}</option>"
                      for lab in labels)
    prompt = _esc(ex.get("prompt", ""))
    html = (f"<p class='note'>Example prompt ({len(ex['tokens'])} tokens, patterns downsampled to at most 48 x 48 "
            f"by block averaging): <q>{prompt}</q></p>"
            f"<label>head: <select id='head-select'>{options}</select></label>"
            f"<table id='drill-scores'><thead><tr><th>analysis</th><th>metric</th><th>score</th><th>rank</th>"
            f"<th>role</th></tr></thead><tbody></tbody></table><div id='drill-pattern'></div>")
    return html, {"figures": figures, "scores": scores}


def _summary(analysis: str, summary: dict) -> str:
    """Scalars inline; nested values (tables, per-position shares) folded into <details>."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    flat = [f"{_esc(k)} = {_esc(fmt(v))}" for k, v in summary.items() if not isinstance(v, (dict, list))]
    nested = {k: v for k, v in summary.items() if isinstance(v, (dict, list))}
    more = (f"<details><summary>details</summary><pre>{_esc(json.dumps(nested, indent=1))}</pre></details>"
            if nested else "")
    return f"<div class='note'>{_esc(analysis)}: {'; '.join(flat)}{more}</div>"


def render_html(doc: dict) -> str:
    """The whole report as one HTML string (no external resources)."""
    name = doc["model"]["name"]
    maps = []
    for analysis, result in doc["analyses"].items():
        fig = heatmap(analysis, result)
        maps.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"heatmap-{analysis}",
                                config={"displaylogo": False, "responsive": True}))
        if result.get("summary"):
            maps.append(_summary(analysis, result["summary"]))
    drill_html, drill_data = _drill(doc)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interp scan: {_esc(name)}</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script>
<script>const DRILL = {_script_json(drill_data)};</script>
<script>{_SCRIPT}</script>
</head><body>
<h1>interp scan: {_esc(name)}</h1>
{_meta_table(doc)}
<h2>Heatmaps (layer x head)</h2>
{''.join(maps) or "<p class='note'>No analysis finished yet.</p>"}
<h2>Top heads</h2>
<p class="note">Click a column header to sort.</p>
{_table(top_heads(doc))}
<h2>Drill-down</h2>
{drill_html}
</body></html>
"""
