"""Which stats backend `auto` picks, and the Triton tile a memory budget's chunk turns into."""

import os

import pytest
import torch

from interp.kernels import OPT_IN, pick_backend, tile_size, triton_usable

pytestmark = pytest.mark.fast


def test_tiles_are_powers_of_two_from_16():
    for chunk in [None, *range(1, 300)]:
        t = tile_size(chunk)
        assert t >= 16 and t & (t - 1) == 0 and t <= 128
        if chunk is not None and chunk >= 16:
            assert t <= chunk < 2 * t or t == 128


def test_auto_takes_torch_on_cuda_unless_opted_in(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.delenv(OPT_IN, raising=False)
    assert pick_backend("auto", cuda) == "torch"
    assert pick_backend("auto", torch.device("cpu")) == "torch"
    monkeypatch.setenv(OPT_IN, "1")
    assert pick_backend("auto", torch.device("cpu")) == "torch"
    expected = "triton" if triton_usable(cuda) else "torch"
    assert pick_backend("auto", cuda) == expected
    assert pick_backend("auto", cuda, top_k=3) == "torch"


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="the kernel runs on a GPU or under TRITON_INTERPRET=1")
def test_any_budget_chunk_gives_a_valid_tile(case):
    pytest.importorskip("triton")
    from interp.kernels import all_stats, reference

    q, k, _, mask, causal = case("padded_bool", q_len=21)
    want = reference.stats(q, k, mask, scaling=0.25, is_causal=causal, columns=True)
    for chunk in (1, 7, 37, 100):  # what chunk_rows may return for some budget
        rows, cols, _ = all_stats(q, k, mask, scaling=0.25, is_causal=causal, columns=True, backend="triton",
                                  chunk=chunk)
        torch.testing.assert_close(rows.lse, want[0].lse, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cols.total, want[1].total, rtol=1e-5, atol=1e-5)
