"""The Triton kernels on a real GPU against the torch path (the check `backend="auto"` waits for).

Marked `gpu`: skipped without CUDA. Run on a GPU machine with `pytest -m gpu tests/kernels`.
"""

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.gpu]  # deselected where there is no CUDA (tests/conftest.py)

SPANS = [(0, 1), (3, 7), (-2, None)]


@pytest.mark.parametrize("mask_kind",
                         ["causal", "padded_bool", "padded_float", "alibi_float", "decode", "full"])
@pytest.mark.parametrize("chunk", [None, 1, 37, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_equals_torch_on_cuda(case, mask_kind, chunk, dtype):
    pytest.importorskip("triton")
    from interp.kernels import all_stats, column_stats, reference

    q, k, v, mask, causal = case(mask_kind, heads=6, kv_heads=2, d=24, q_len=157, dtype=dtype)
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    mask = mask.cuda() if mask is not None else None
    kw = {"scaling": 24**-0.5, "is_causal": causal, "spans": SPANS, "columns": True, "value": v}
    t_rows, t_cols, t_out = all_stats(q, k, mask, backend="triton", chunk=chunk, **kw)
    r_rows, r_cols, r_out = reference.stats(q, k, mask, **kw)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for name in ("lse", "max_score", "entropy", "span_mass"):
        torch.testing.assert_close(getattr(t_rows, name), getattr(r_rows, name), **tol)
    assert torch.equal(t_rows.n_visible, r_rows.n_visible)
    torch.testing.assert_close(t_cols.total, r_cols.total, **tol)
    assert torch.equal(t_cols.count, r_cols.count)
    torch.testing.assert_close(t_out.float(), r_out.float(), **tol)
    cols = column_stats(q, k, mask, r_rows.lse, scaling=kw["scaling"], is_causal=causal, backend="triton",
                        chunk=chunk)
    torch.testing.assert_close(cols.total, r_cols.total, **tol)
