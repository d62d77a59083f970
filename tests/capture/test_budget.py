import pytest
import torch
from tiny import padded_batch, tiny_model

import interp
from interp.capture.budget import MemoryBudget, chunk_rows, parse_bytes, pattern_bytes
from interp.capture.stats import Stats
from interp.errors import InterpError, MemoryBudgetError


@pytest.mark.fast
def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1.5 GiB") == 3 * 2**29
    assert parse_bytes("100") == 100 and parse_bytes(7) == 7
    for bad in ("two gigs", "5 parsecs", "-1GB", 0):
        with pytest.raises(InterpError):
            parse_bytes(bad)


@pytest.mark.fast
def test_patterns_that_cannot_fit_fail_before_any_layer_runs():
    model = tiny_model("llama")  # 2 layers x 4 heads
    batch = padded_batch(lengths=(9, 9))
    need = pattern_bytes(layers=2, heads=4, batch=2, q_len=9, k_len=9)
    calls = []
    spy = model.model.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        pat = interp.Patterns()
        with pytest.raises(MemoryBudgetError, match=r"need 5\.2 KB.*Stats recorder"):
            with interp.capture(model, probes=[pat, MemoryBudget(need - 1, [pat])]):
                model(**batch)
        assert calls == []  # refused before the first block ran
        pat = interp.Patterns()
        with interp.capture(model, probes=[pat, MemoryBudget(need, [pat])]) as rec:
            model(**batch)
        assert sum(t.numel() * 4 for t in rec.probes[0].data.values()) == need
        one_head = interp.Patterns(heads=[1], queries=-1)  # selecting heads and rows shrinks the request
        with interp.capture(model, probes=[one_head, MemoryBudget(need // 36, [one_head])]):
            model(**batch)
    finally:
        spy.remove()


@pytest.mark.fast
def test_budget_chunks_stats_exactly():
    model = tiny_model("llama")
    batch = padded_batch(lengths=(9, 5))
    small = Stats()
    # 2 rows per chunk
    with interp.capture(model, probes=[small, MemoryBudget(3 * 4 * 2 * 4 * 9 * 2, [small])]):
        model(**batch)
        assert small.max_memory == 3 * 4 * 2 * 4 * 9 * 2
        assert chunk_rows(small.max_memory, batch=2, heads=4, k_len=9) == 2
    assert small.max_memory is None  # the budget is lent for the capture only: a reused probe starts clean
    free = Stats()
    with interp.capture(model, probes=[free]):
        model(**batch)
    for layer in (0, 1):
        torch.testing.assert_close(small.rows[layer].entropy, free.rows[layer].entropy, rtol=1e-6, atol=1e-6)
    with pytest.raises(MemoryBudgetError, match="one query row"):
        chunk_rows(100, batch=2, heads=4, k_len=9)
