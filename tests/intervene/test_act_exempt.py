"""Which sink ACT leaves undamped: interp's `exempt` rules against an independent port of ACT's loop body.

`act_loop_body` below is a line-by-line port of the per-head calibration step as ACT (Yu et al. 2024,
"Unveiling and Harnessing Hidden Attention Sinks", github.com/Eclipsess/ACT) describes it: column
means over the queries that see each key (`sum(dim=0) / arange(T, 0, -1)` on a causal map), sinks =
keys whose mean exceeds the ratio threshold, the *first detected sink* kept, the other sinks' attention
scaled by beta and the removed mass handed to the remaining keys in proportion to their attention.
The official repository's source was not reachable from this project's environment, so the port
follows the paper and the official code's behaviour as described by the project's users (first
detected sink exempt); it shares no code with `interp.intervene.calibrate`.
"""

import pytest
import torch

from interp.intervene.calibrate import Calibration, CalibrationError, detect_sinks, rebalance

pytestmark = pytest.mark.fast

BETA, TAU = 0.4, 0.1


def act_loop_body(attn: torch.Tensor, beta: float, ratio: float) -> torch.Tensor:
    """One head's causal map `[T, T]` (rows: queries) calibrated as ACT's loop does it."""
    T = attn.shape[-1]
    mean_attn = attn.sum(dim=0) / torch.arange(T, 0, -1, dtype=attn.dtype)
    sink_idx = torch.where(mean_attn > ratio)[0]
    sink_idx = sink_idx[1:]  # the first detected sink is the model's own: kept
    if len(sink_idx) == 0:
        return attn
    new = attn.clone()
    new[:, sink_idx] = attn[:, sink_idx] * beta
    removed = attn[:, sink_idx].sum(dim=-1, keepdim=True) * (1 - beta)
    rest = attn.clone()
    rest[:, sink_idx] = 0
    rest_sum = rest.sum(dim=-1, keepdim=True)
    new = new + removed * rest / rest_sum
    return torch.where(rest_sum > 0, new, attn)


def causal_maps(seed: int, *, batch=3, heads=4, T=12, sinks=(0,), strength=4.0, avoid=()) -> torch.Tensor:
    """Random causal attention `[batch, head, T, T]`, extra logit mass on `sinks`, less on `avoid`."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, heads, T, T, generator=g, dtype=torch.float64)
    for s in sinks:
        logits[..., s] += strength * torch.rand(batch, heads, 1, generator=g, dtype=torch.float64)
    for s in avoid:
        logits[..., s] -= strength
    logits = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(logits, -1)


def interp_edit(w: torch.Tensor, exempt: str) -> torch.Tensor:
    T = w.shape[-1]
    col_mean = w.sum(-2) / torch.arange(T, 0, -1, dtype=w.dtype)
    seen = torch.ones(w.shape[0], T, dtype=torch.bool)
    return rebalance(w, detect_sinks(col_mean, seen, TAU, exempt), BETA)


def reference(w: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([act_loop_body(w[b, h], BETA, TAU) for h in range(w.shape[1])])
                        for b in range(w.shape[0])])


@pytest.mark.parametrize("sinks", [(0,), (0, 5), (3,), (4, 7), ()],
                         ids=["first", "first+5", "3", "4+7", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_sink_reproduces_act(sinks, seed):
    w = causal_maps(seed, sinks=sinks, avoid=() if 0 in sinks else (0,))
    want = reference(w)
    got = interp_edit(w, "first_sink")
    assert (got - want).abs().max() < 1e-12
    if sinks and sinks != (0,):
        assert (want - w).abs().max() > 1e-3, "the map needs a hidden sink for the test to bite"
    if 0 not in sinks:  # the case where the rules differ: the first token is no sink in some head
        assert (w.sum(-2)[..., 0] / w.shape[-1] <= TAU).any()


def test_first_token_differs_where_the_first_token_is_no_sink():
    w = causal_maps(0, sinks=(3, 7), strength=6.0, avoid=(0,))
    T = w.shape[-1]
    col_mean = w.sum(-2) / torch.arange(T, 0, -1, dtype=w.dtype)
    assert (col_mean[..., 0] <= TAU).any(), "some head must have a first token that is no sink"
    assert (interp_edit(w, "first_token") - reference(w)).abs().max() > 1e-2
    w = causal_maps(0, sinks=(0, 6), strength=8.0)
    col_mean = w.sum(-2) / torch.arange(T, 0, -1, dtype=w.dtype)
    assert (col_mean[..., 0] > TAU).all()  # first token a sink everywhere: both rules agree
    assert (interp_edit(w, "first_token") - reference(w)).abs().max() < 1e-12


def test_left_padding_first_sink_is_the_first_real_sink():
    w = causal_maps(4, batch=1, sinks=(5,), T=10)  # keys 0..2 become padding, seen by nobody
    w[..., :3] = 0
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    w[..., :3, :] = 0
    col_mean = w.sum(-2) / torch.arange(10, 0, -1, dtype=w.dtype).clamp(max=7)
    seen = torch.arange(10)[None] >= 3
    sinks = detect_sinks(col_mean, seen, TAU, "first_sink")
    assert not sinks[..., :3].any()
    want = reference(w[:, :, 3:, 3:])
    got = rebalance(w, sinks, BETA)[:, :, 3:, 3:]
    assert (got - want).abs().max() < 1e-12


def test_exempt_is_validated_and_saved(tmp_path):
    with pytest.raises(CalibrationError, match="first_sink"):
        Calibration([(0, 0)], exempt="first")
    cal = Calibration([(0, 0)], exempt="first_token")
    assert Calibration.load(cal.save(tmp_path / "c.json")).exempt == "first_token"
    assert Calibration([(0, 0)]).exempt == "first_sink"
    (tmp_path / "old.json").write_text('{"heads": [[0, 0]], "beta": 0.4, "tau": 0.1, "exclude_first": true}')
    assert Calibration.load(tmp_path / "old.json").exempt == "first_token"  # files from before `exempt`
