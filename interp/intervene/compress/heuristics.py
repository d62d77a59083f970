"""Head scores for selection that need no training: sink mass (from the `Stats` probe) and random.

`sink_scores`: for every query at least `window` positions into the prompt (the queries a
streaming head would truncate), the attention mass a head puts on the first `sink` real tokens.
A head that parks its attention on the sink is well served by a streaming cache, so its score is
`1 - mean sink mass` (higher = keep full). A KV head then takes the max over its query heads.

    >>> scores = sink_scores(m, [ids_a, ids_b], sink=4, window=256)   # doctest: +SKIP
"""

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.capture import Stats, capture
from interp.models.model import as_model


@torch.no_grad()
def sink_scores(model, prompts: Sequence[Tensor], *, sink: int = 4,
                window: int = 256) -> Float[Tensor, "layer head"]:
    """`1 - mean attention mass on the first sink tokens` per query head over `prompts` (1-D token ids)."""
    m = as_model(model)
    total = torch.zeros(m.adapter.n_layers(), m.adapter.n_heads)
    for ids in prompts:
        ids = torch.as_tensor(ids, device=m.device).view(1, -1)
        with capture(m, stats=Stats(first_tokens=sink, with_columns=False)) as rec:
            m.hf(input_ids=ids, use_cache=False)
        start = min(window, ids.shape[1] - 1)
        for layer, rows in rec.stats.rows.items():
            total[layer] += rows.span_mass[0, :, start:, -1].float().mean(-1).cpu()
    return 1.0 - total / len(prompts)


def random_scores(n_layers: int, n_kv_heads: int, seed: int) -> Float[Tensor, "layer kv_head"]:
    """Uniform random KV-head scores (a random selection at any fraction)."""
    return torch.rand(n_layers, n_kv_heads, generator=torch.Generator().manual_seed(seed))
