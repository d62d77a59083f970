"""What each scan section measured: its settings, its trial counts, and 95% intervals of its summary numbers.

    >>> config = doc["settings"]["config"]["retrieval"]                     # doctest: +SKIP
    >>> lines = measured("retrieval", doc["analyses"]["retrieval"], config)  # doctest: +SKIP
    >>> lines[1]                                                             # doctest: +SKIP
    'recalled 9/12 NIAH trials (75.0%, 95% CI 46.8-91.1%, Wilson)'

Proportions of independent trials get Wilson intervals (scipy `binomtest`); means over prompts
get percentile bootstrap intervals (scipy `bootstrap`, 2000 resamples, seed 0).
"""

import numpy as np

DOCS = {"heads": "docs/scan.md", "sinks": "docs/sinks.md", "retrieval": "docs/retrieval.md",
        "saliency": "docs/saliency.md", "binding": "docs/binding.md"}


def wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_mean(x, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (a constant sample: the value itself)."""
    from scipy.stats import bootstrap

    x = np.asarray(x, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(x.mean()), float(x.mean())
    res = bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def measured(name: str, result: dict, config: dict | None) -> list[str]:
    """Plain-text lines: settings, counts, and the CI of each summary number the analysis has data for."""
    c, s = config or {}, result.get("summary") or {}
    lines = []
    if name == "heads":
        lines.append(f"settings: {c.get('n_random')} random sequences of 1 + 2 x {c.get('half_len')} tokens, "
                     f"{c.get('n_text')} text passages of {c.get('text_tokens')} tokens")
        over = s.get("heads_over_threshold", {})
        if over:
            lines.append("heads over threshold (0.4): " + ", ".join(f"{k} {v}" for k, v in over.items()))
        lines.append("scores are attention means over every counted query row: no per-trial data, no "
                     "interval")
    elif name == "sinks":
        per = s.get("per_prompt", {})
        n = len(per.get("sink_rate", [])) or c.get("n_prompts")
        lines.append(f"settings: {n} passages of {c.get('length')} tokens, eps = {c.get('eps')}, "
                     f"tau = {c.get('tau')}")
        for key, label in ((next((k for k in s if k.startswith("Sink1^")), None), "Sink1"),
                           ("hidden_rate", "hidden")):
            if key is None or key not in s:
                continue
            text = f"{key} = {_pct(s[key])} of (prompt, layer, head)"
            sample = per.get("sink_rate" if label == "Sink1" else "hidden_rate")
            if sample:
                lo, hi = bootstrap_mean(sample)
                text += f" (95% CI {_pct(lo)}-{_pct(hi)}, bootstrap over {len(sample)} prompts)"
            lines.append(text)
    elif name == "retrieval":
        lines.append(f"settings: {c.get('n_needles')} needles x lengths {c.get('lengths')} x depths "
                     f"{c.get('depths')}, {c.get('max_new_tokens')} new tokens, threshold "
                     f"{c.get('threshold')}")
        n, k = s.get("trials"), s.get("recalled")
        if n:
            lo, hi = wilson(k, n)
            lines.append(f"recalled {k}/{n} NIAH trials ({_pct(k / n)}, 95% CI {_pct(lo)}-{_pct(hi)}, "
                         f"Wilson); head scores average the recalled trials")
        frac = next((v for key, v in s.items() if key.startswith("fraction_over_")), None)
        if frac is not None:
            lines.append(f"{_pct(frac)} of heads score over {c.get('threshold')}")
    elif name == "saliency":
        prompts = c.get("prompts") or []
        lines.append(f"settings: {len(prompts)} prompts x {c.get('max_new_tokens')} new tokens, "
                     f"{c.get('method')}, first token dropped: {c.get('drop_first')}")
        lines.append(f"{s.get('generated_tokens')} generated tokens; correlations averaged over them "
                     f"(no interval: {len(prompts)} prompts)")
    elif name == "binding":
        lines.append(f"settings: n = {c.get('n')} groups, template {c.get('template')!r}, "
                     f"{c.get('per_position')} counterfactual prompts per position")
        acc = s.get("accuracy") or {}
        key = str(c.get("n"))
        rate, count = (acc.get("by_n") or {}).get(key), (acc.get("counts") or {}).get(key)
        if rate is not None and count:
            k = round(rate * count)
            lo, hi = wilson(k, count)
            lines.append(f"accuracy {k}/{count} prompts ({_pct(rate)}, 95% CI {_pct(lo)}-{_pct(hi)}, Wilson; "
                         f"chance {_pct(1 / c['n'])}); binding read at layer {s.get('read_layer')}")
    else:
        lines.append(f"settings: {c}")
    return lines
