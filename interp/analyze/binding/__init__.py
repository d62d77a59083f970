"""Binding mechanisms (Gur-Arieh, Geva & Geiger 2025): positional, lexical and reflexive retrieval.

- `patching`: the interchange intervention (engine `Patch`, local hooks, nnsight);
- `sweep`: outcome labels, the per-n layer sweep, shares with Wilson intervals;
- `mixing`: the causal mixing model, fitted and compared per subset of its terms;
- `probes`: key conflict and key knockout, interventions that test where a model gathers the key;
- `generalise`: accuracy beyond the training prompts (more groups, paraphrases, formats);
- `analysis`: `analyze_binding`, the whole run; `figures`: plotly figures of a result.

    >>> from interp.analyze.binding import BindingConfig, analyze_binding   # doctest: +SKIP
    >>> result = analyze_binding(model, tok, BindingConfig(groups=(5, 8)))  # doctest: +SKIP
"""

from interp.analyze.binding.analysis import (
    BindingConfig,
    BindingResult,
    analyze_binding,
    choose_read_layer,
    fit_at_layer,
)
from interp.analyze.binding.mixing import (
    SUBSETS,
    TERMS,
    MixingData,
    MixingModel,
    TermComparison,
    compare_terms,
    fit_mixing_model,
    js_divergence,
    uniform_score,
)
from interp.analyze.binding.patching import (
    decoder_layers,
    patched_logits,
    patched_logits_nnsight,
    residual_patch,
    residuals,
)
from interp.analyze.binding.sweep import LABELS, Sweep, outcome_labels, share_interval, shares, sweep

__all__ = [
    "LABELS", "SUBSETS", "TERMS", "BindingConfig", "BindingResult", "MixingData", "MixingModel", "Sweep",
    "TermComparison", "analyze_binding", "choose_read_layer", "compare_terms", "decoder_layers",
    "fit_at_layer", "fit_mixing_model", "js_divergence", "outcome_labels", "patched_logits",
    "patched_logits_nnsight", "residual_patch", "residuals", "share_interval", "shares", "sweep",
    "uniform_score",
]
