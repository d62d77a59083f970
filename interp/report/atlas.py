"""The head atlas: one row per head, every per-head score a scan holds, roles and cross-analysis correlations.

    >>> rows = atlas(load_scan("runs/smollm2"))                      # doctest: +SKIP
    >>> rows.columns[0].key, rows.labels[0], rows.roles["18.6"]      # doctest: +SKIP
    ('heads.previous_token', '0.0', ['induction head', 'retrieval head', ...])

Roles: a head takes a metric's `role` when its score is above the metric's `threshold` (the
thresholds are the analyses' settings, listed in docs/report.md); metrics without a threshold
(entropy, mean distance, binding layer effect) give no role. Per-layer analyses (binding) enter as
one derived column repeated over the layer's heads (the binding layer effect: total-variation
distance between the mechanism shares with that layer patched and unpatched).
"""

import math
from dataclasses import dataclass, field

from interp.axes import head_label


@dataclass
class Column:
    """One per-head score: `scores[i]` is head `labels[i]` of the atlas."""

    key: str  # "analysis.metric"
    analysis: str
    metric: str
    role: str
    description: str
    threshold: float | None
    scores: list[float]

    def ranks(self) -> list[int]:
        """1 = highest score; ties keep head order."""
        order = sorted(range(len(self.scores)), key=lambda i: -self.scores[i])
        out = [0] * len(order)
        for r, i in enumerate(order, 1):
            out[i] = r
        return out


@dataclass
class Atlas:
    labels: list[str]  # "L.H"
    columns: list[Column]
    roles: dict[str, list[str]] = field(default_factory=dict)

    def column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key or c.metric == key), None)


def atlas(doc: dict) -> Atlas:
    """Every head-level metric of the scan (and the binding layer effect), flattened to one list per
    column."""
    n_layers, n_heads = doc["model"]["n_layers"], doc["model"]["n_heads"]
    labels = [head_label(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    columns = []
    for name, result in doc["analyses"].items():
        for key, m in result["metrics"].items():
            if m.get("columns"):
                if name == "binding":
                    unpatched = (result.get("summary") or {}).get("unpatched_shares") or {}
                    base = next(iter(unpatched.values()), None) if unpatched else None
                    columns.append(_binding_column(name, key, m, n_heads, base))
                continue
            flat = [float(s) for row in m["scores"] for s in row]
            if len(flat) != len(labels):
                continue
            columns.append(Column(f"{name}.{key}", name, key, m["role"], m.get("description", ""),
                                  m.get("threshold"), flat))
    roles = {}
    for i, label in enumerate(labels):
        found = []
        for c in columns:
            if c.threshold is not None and c.scores[i] > c.threshold and c.role not in found:
                found.append(c.role)
        roles[label] = found
    return Atlas(labels, columns, roles)


def _binding_column(name: str, key: str, m: dict, n_heads: int, unpatched: dict | None) -> Column:
    """Per layer: total-variation distance between the mechanism shares with the layer patched and
    unpatched."""
    base = [float((unpatched or {}).get(c, 0.0)) for c in m["columns"]]
    per_layer = [0.5 * sum(abs(x - y) for x, y in zip(row, base)) for row in m["scores"]]
    return Column(f"{name}.layer_effect", name, "binding_layer_effect", "binding layer",
                  "how much patching this head's layer moves the binding-mechanism shares (total-variation "
                  "distance from the unpatched shares); the same for every head of the layer", None,
                  [s for s in per_layer for _ in range(n_heads)])


def spearman_matrix(a: Atlas) -> list[list[float | None]]:
    """Spearman rank correlation of every pair of columns over heads (None where a column is constant)."""
    import numpy as np
    from scipy.stats import spearmanr

    k = len(a.columns)
    out: list[list[float | None]] = [[None] * k for _ in range(k)]
    data = np.array([c.scores for c in a.columns], dtype=float)
    for i in range(k):
        for j in range(k):
            if np.ptp(data[i]) == 0 or np.ptp(data[j]) == 0:
                continue
            rho = spearmanr(data[i], data[j]).statistic
            out[i][j] = None if math.isnan(rho) else round(float(rho), 4)
    return out
