"""Architecture coverage: does `interp` capture every causal LM of the installed transformers exactly?

    python -m interp.coverage                       # all causal-LM model types -> docs/coverage.md
    python -m interp.coverage llama gpt2 gemma2     # a few types, table on stdout
    python -m interp.coverage --jobs 2 --time-limit 60 --out /tmp/coverage.md

For every model type in `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` it builds a tiny random model (2 layers,
small widths: `tiny_config`), runs a left-padded batch and checks, on the real (non-padding) rows:

    (a) patterns  captured `Patterns` == eager `output_attentions` (atol 1e-5, fp32)
    (b) logits    logits inside a capture == logits without one (atol 1e-4)
    (c) z         captured per-head `z`, flattened, == the input of the adapter's output projection
    (d) stats     streaming `Stats` (entropy, argmax, span mass, column totals) == from eager patterns

Statuses: `pass`; `fail` (routed through `AttentionInterface`, some check differs: a regression);
`unsupported` (interp refuses the architecture, with the reason); `skip` (no tiny model could be
built here: the reason names what is missing). Each type runs in a worker process under a time limit.
Memory: one tiny model per worker (a few MB, vocabularies up to ~260k rows x 64).
"""

from interp.coverage.checks import KNOWN, Result, check
from interp.coverage.sweep import causal_lm_types, routed, run_one, sweep, table, tl_count
from interp.coverage.tiny import (
           HEAD_DIM,
           HEADS,
           HIDDEN,
           LAYERS,
           OVERRIDES,
           padded_batch,
           shrink,
           tiny_config,
           tiny_model,
)

__all__ = ["check", "Result", "KNOWN", "sweep", "run_one", "table", "tl_count", "causal_lm_types", "routed",
           "shrink", "tiny_config", "tiny_model", "padded_batch", "OVERRIDES", "LAYERS", "HIDDEN", "HEADS",
           "HEAD_DIM"]
