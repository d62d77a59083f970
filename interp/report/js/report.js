// report.html: sortable / filterable head atlas, head cards, the correlation scatter.
// Globals set by the page: ATLAS = {labels, columns: [{key, metric, role, threshold, scores, ranks}], roles},
// EX = {tokens, rows, scale, heads: {label: [[int]]}} (example patterns), CORR = {keys, rho},
// FIGS = {div id: plotly figure} (the heatmaps: drawn one per tick after the load event, so the atlas is usable first).
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
  const asc = th.dataset.order === 'desc';  // first click: descending (highest score first)
  table.querySelectorAll('th').forEach(t => { if (t !== th) delete t.dataset.order; });
  th.dataset.order = asc ? 'asc' : 'desc';
  const num = th.dataset.type === 'num';
  const key = c => { const v = c.dataset.v ?? c.textContent; return num ? parseFloat(v) : v; };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a.cells[col]), y = key(b.cells[col]);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
function filterAtlas() {
  const text = document.getElementById('atlas-filter').value.trim().toLowerCase();
  const role = document.getElementById('atlas-role').value;
  let shown = 0;
  document.querySelectorAll('#atlas tbody tr').forEach(tr => {
    const ok = (!text || tr.dataset.search.includes(text)) && (!role || tr.dataset.roles.split('|').includes(role));
    tr.hidden = !ok; shown += ok; });
  document.getElementById('atlas-count').textContent = `${shown} of ${ATLAS.labels.length} heads`;
}
function examplePattern(label) {
  const p = EX.heads && EX.heads[label];
  return p ? p.map(r => r.map(v => v / EX.scale)) : null;
}
function exampleTokens() {
  return (EX.rows || EX.tokens.map((_, i) => i)).map(i => EX.tokens[i] ?? String(i));
}
function showCard(label) {
  const i = ATLAS.labels.indexOf(label); if (i < 0) return;
  const card = document.getElementById('head-card'), [layer, head] = label.split('.');
  card.hidden = false; card.dataset.head = label;
  document.getElementById('card-title').textContent = `layer ${layer}, head ${head}`;
  const roles = ATLAS.roles[label];
  document.getElementById('card-roles').textContent = roles.length ? roles.join(', ') : 'no role over threshold';
  const tb = document.getElementById('card-scores').tBodies[0]; tb.innerHTML = '';
  ATLAS.columns.forEach(c => {
    const tr = tb.insertRow();
    [c.key, c.scores[i].toFixed(4), `${c.ranks[i]} / ${ATLAS.labels.length}`,
     c.threshold === null ? '' : (c.scores[i] > c.threshold ? `> ${c.threshold}: ${c.role}` : `<= ${c.threshold}`)]
      .forEach(v => { tr.insertCell().textContent = v; }); });
  document.querySelectorAll('#atlas tbody tr.sel').forEach(r => r.classList.remove('sel'));
  const row = document.querySelector(`#atlas tbody tr[data-head="${label}"]`); if (row) row.classList.add('sel');
  const view = document.getElementById('card-attention'), pattern = examplePattern(label);
  const extra = (document.getElementById('card-compare').value || '').split(/[\s,]+/).filter(x => x && x !== label && EX.heads[x]);
  if (pattern) {
    const heads = [label, ...extra].map(l => ({label: `layer ${l.split('.')[0]}, head ${l.split('.')[1]}`, pattern: examplePattern(l)}));
    window.interpAttention(view, {tokens: exampleTokens(), heads, mode: 'to'});
  } else { view.textContent = 'This scan stored no example pattern for this head.'; }
  card.scrollIntoView({block: 'nearest'});
}
function drawScatter(x, y) {
  const cx = ATLAS.columns.find(c => c.key === x), cy = ATLAS.columns.find(c => c.key === y);
  if (!cx || !cy || typeof Plotly === 'undefined') return;
  const rho = CORR.rho[CORR.keys.indexOf(x)][CORR.keys.indexOf(y)];
  document.getElementById('corr-x').value = x; document.getElementById('corr-y').value = y;
  Plotly.react('corr-scatter', [{x: cx.scores, y: cy.scores, text: ATLAS.labels, mode: 'markers', type: 'scatter',
    marker: {size: 6, opacity: 0.7}, hovertemplate: 'head %{text}<br>x %{x:.3f}<br>y %{y:.3f}<extra></extra>'}],
    {title: {text: `${y} vs ${x}: Spearman rho = ${rho === null ? 'n/a (constant)' : rho.toFixed(3)} (${ATLAS.labels.length} heads)`},
     xaxis: {title: {text: x}}, yaxis: {title: {text: y}}, height: 420, margin: {t: 50, l: 60, r: 20, b: 50}},
    {displaylogo: false});
  const plot = document.getElementById('corr-scatter');
  if (!plot.dataset.bound) { plot.dataset.bound = '1'; plot.on('plotly_click', ev => showCard(ev.points[0].text)); }
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => sortTable(th)));
  document.querySelectorAll('#atlas tbody tr').forEach(tr => tr.addEventListener('click', () => showCard(tr.dataset.head)));
  const f = document.getElementById('atlas-filter'), r = document.getElementById('atlas-role');
  if (f) { f.addEventListener('input', filterAtlas); r.addEventListener('change', filterAtlas); filterAtlas(); }
  document.querySelectorAll('#corr-table td[data-x]').forEach(td => td.addEventListener('click', () => drawScatter(td.dataset.x, td.dataset.y)));
  const cx = document.getElementById('corr-x'), cy = document.getElementById('corr-y');
  if (cx) { [cx, cy].forEach(s => s.addEventListener('change', () => drawScatter(cx.value, cy.value)));
            drawScatter(CORR.x0, CORR.y0); }
  const cmp = document.getElementById('card-compare');
  if (cmp) cmp.addEventListener('change', () => { const h = document.getElementById('head-card').dataset.head; if (h) showCard(h); });
});
window.addEventListener('load', () => {
  const ids = Object.keys(typeof FIGS === 'undefined' ? {} : FIGS);
  const next = () => { const id = ids.shift(); if (!id) { document.documentElement.dataset.plotsDrawn = performance.now() | 0; return; }
    const f = FIGS[id]; Plotly.newPlot(id, f.data, f.layout, {displaylogo: false, responsive: true}); setTimeout(next, 0); };
  setTimeout(next, 0);
});
