"""The fused Triton kernels against the torch path, on CPU under Triton's interpreter.

The interpreter must be on before triton is first imported (its own library functions are jitted
at import); tests/conftest.py sets `TRITON_INTERPRET=1` on machines without a GPU. If triton was
imported without it, the checks below run in a fresh subprocess with the interpreter instead.
"""

import os
import subprocess
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # effective only if triton is not imported yet

import pytest
import torch

CUDA = torch.cuda.is_available()
triton = pytest.importorskip("triton")
INTERPRETED = CUDA or bool(triton.knobs.runtime.interpret)
needs_kernel = pytest.mark.skipif(not INTERPRETED, reason="run by test_in_fresh_interpreter")


if not INTERPRETED:  # triton was imported without the interpreter: run this file again with it

    @pytest.mark.fast
    def test_in_fresh_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1",
               "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                              env=env, capture_output=True, text=True, timeout=300,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "7 passed" in proc.stdout, proc.stdout[-500:]


from interp.errors import InterpError  # noqa: E402
from interp.kernels import all_stats, column_stats, reference  # noqa: E402
from interp.kernels.triton_stats import fused_stats  # noqa: E402

SPANS = [(0, 1), (3, 7), (-2, None)]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.fast
@needs_kernel
@pytest.mark.parametrize(
    "mask_kind,heads,kv_heads,d,q_len,softcap",
    [
        ("causal", 4, 2, 16, 37, None),  # odd length: a ragged last tile, skipped future tiles
        ("padded_bool", 6, 2, 24, 19, None),  # head dim that is not a power of two
        ("padded_float", 3, 1, 16, 21, 4.0),  # multi-query attention + softcap
        ("alibi_float", 2, 2, 8, 18, None),  # per-head additive bias
        ("decode", 4, 4, 16, 23, None),  # one query over a KV cache
        ("full", 2, 1, 32, 17, None),  # bidirectional
    ],
)
def test_triton_equals_torch_path(case, mask_kind, heads, kv_heads, d, q_len, softcap):
    q, k, v, mask, causal = case(mask_kind, heads=heads, kv_heads=kv_heads, d=d, q_len=q_len)
    if softcap:
        q = q * 4
    kw = dict(scaling=d**-0.5, is_causal=causal, softcap=softcap, spans=SPANS, columns=True)
    t_out, t_rows, t_cols = fused_stats(q, k, v, mask, block=16, **kw)
    r_rows, r_cols, r_out = reference.stats(q, k, mask, value=v, **kw)
    for name in ("lse", "max_score", "entropy", "span_mass"):
        close(getattr(t_rows, name), getattr(r_rows, name))
    assert torch.equal(t_rows.argmax, r_rows.argmax)
    assert torch.equal(t_rows.n_visible, r_rows.n_visible)
    close(t_cols.total, r_cols.total)
    assert torch.equal(t_cols.count, r_cols.count)
    close(t_out, r_out)


@pytest.mark.fast
@needs_kernel
def test_dispatch_and_transposed_inputs(case):
    """transformers hands views transposed from [batch, query, head, d]; strides must be honoured."""
    q, k, _, mask, causal = case("padded_bool", q_len=17)
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2)
    rows, _, out = all_stats(q_t, k, mask, scaling=0.25, is_causal=causal, backend="triton", chunk=16)
    assert out is None
    close(rows.lse, reference.stats(q, k, mask, scaling=0.25, is_causal=causal)[0].lse)
    cols = column_stats(q_t, k, mask, rows.lse, scaling=0.25, is_causal=causal, backend="triton", chunk=16)
    close(cols.total, reference.columns_from_lse(q, k, mask, rows.lse, scaling=0.25, is_causal=causal).total)
    with pytest.raises(InterpError, match="top_k"):
        all_stats(q, k, mask, scaling=0.25, is_causal=causal, backend="triton", top_k=2)
