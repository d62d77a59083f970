// Token-level attention view: one panel per head, tokens as inline boxes.
// Hover (or click to pin) a token: the other tokens are shaded by the attention it pays them
// ("attends to": row of the pattern) or by the attention they pay it ("attended by": column).
// data = {tokens: [str], heads: [{label, pattern: [[q][k]]}], mode: "to" | "from"}
window.interpAttention = window.interpAttention || function (root, data) {
  const n = data.tokens.length, state = {mode: data.mode || 'to', focus: null, pinned: false};
  const shown = t => t.replace(/\n/g, '\u23ce').replace(/\t/g, '\u21e5') || '\u2205';
  root.classList.add('iattn');
  root.innerHTML = '';
  const bar = document.createElement('div'); bar.className = 'iattn-bar';
  const sel = document.createElement('select');
  [['to', 'hover a token: where it attends'], ['from', 'hover a token: what attends to it']].forEach(([v, t]) => {
    const o = document.createElement('option'); o.value = v; o.textContent = t; sel.appendChild(o); });
  sel.value = state.mode; sel.addEventListener('change', () => { state.mode = sel.value; paint(); });
  const info = document.createElement('span'); info.className = 'iattn-info';
  bar.append(sel, info); root.appendChild(bar);
  const wrap = document.createElement('div'); wrap.className = 'iattn-panels'; root.appendChild(wrap);
  const panels = data.heads.map(h => {
    const p = document.createElement('div'); p.className = 'iattn-panel';
    const title = document.createElement('div'); title.className = 'iattn-title'; title.textContent = h.label;
    p.appendChild(title);
    const spans = data.tokens.map((t, i) => {
      const s = document.createElement('span'); s.className = 'iattn-tok'; s.textContent = shown(t);
      s.dataset.i = i;
      s.addEventListener('mouseenter', () => { if (!state.pinned) { state.focus = i; paint(); } });
      s.addEventListener('click', () => { state.pinned = !(state.pinned && state.focus === i); state.focus = i; paint(); });
      p.appendChild(s); return s; });
    wrap.appendChild(p); return {head: h, spans};
  });
  root.addEventListener('mouseleave', () => { if (!state.pinned) { state.focus = null; paint(); } });
  function weights(P, i) {  // the focused token's row or column; with no focus: attention received (column mean)
    if (i === null) {
      return Array.from({length: n}, (_, k) => { let s = 0, c = 0;
        for (let q = k; q < P.length; q++) { s += (P[q] || [])[k] || 0; c++; } return c ? s / c : 0; });
    }
    return state.mode === 'to' ? Array.from({length: n}, (_, k) => (P[i] || [])[k] || 0)
                               : Array.from({length: n}, (_, q) => (P[q] || [])[i] || 0);
  }
  function paint() {
    const i = state.focus;
    info.textContent = i === null ? 'shading: mean attention each token receives' :
      `${state.pinned ? 'pinned' : 'hover'}: token ${i} ${JSON.stringify(data.tokens[i])}` +
      (state.mode === 'to' ? ' attends to' : ' is attended by');
    panels.forEach(({head, spans}) => {
      const w = weights(head.pattern, i), top = Math.max(1e-9, ...w);
      spans.forEach((s, k) => {
        const a = w[k] / top;
        s.style.background = `rgba(31,119,180,${(0.85 * a).toFixed(3)})`;
        s.style.color = a > 0.6 ? '#fff' : '';
        s.classList.toggle('iattn-focus', k === i);
        s.title = `${k}: ${JSON.stringify(data.tokens[k])}  ${w[k].toFixed(4)}`;
      });
    });
  }
  paint();
  return {focus: (i, mode) => { if (mode) { state.mode = mode; sel.value = mode; } state.focus = i; state.pinned = true; paint(); }};
};
