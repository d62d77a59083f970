"""The architecture sweep: every causal-LM type that passed when docs/coverage.md was written still passes."""

import re
from pathlib import Path

import pytest

from interp import coverage
from interp.errors import InterpError

TABLE = Path(__file__).resolve().parents[1] / "docs" / "coverage.md"


def recorded_status() -> dict[str, str]:
    """{model type: status} from the committed coverage table."""
    rows = re.findall(r"^\| ([\w.-]+) \| \S+ \| (?:yes|no) \| (\w+) \|", TABLE.read_text(), flags=re.M)
    return dict(rows)


@pytest.mark.fast
def test_shrink_keeps_one_layer_of_each_kind_and_remaps_per_layer_settings():
    kinds = ["linear", "linear", "linear", "full"] * 3
    d = {"num_hidden_layers": 12, "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16,
         "head_dim": None, "layer_types": kinds, "per_layer_config": {"03": {"head_dim": 512}, "07": {}},
         "text_config": {"model_type": "x", "hidden_size": 4096, "num_hidden_layers": 40}}
    out = coverage.shrink(d)
    assert out["num_hidden_layers"] == 2 and out["layer_types"] == ["linear", "full"]
    assert out["per_layer_config"] == {1: {"head_dim": coverage.HEAD_DIM}}  # layer 3 became layer 1
    assert out["num_key_value_heads"] == coverage.HEADS  # MHA stays MHA
    assert out["head_dim"] == coverage.HEAD_DIM  # None ("derive it") is set explicitly
    assert out["text_config"]["hidden_size"] == coverage.HIDDEN


@pytest.mark.fast
def test_checks_catch_a_wrong_adapter(monkeypatch):
    """Point the adapter's output projection at the MLP's input layer: check (c) must fail, naming it."""
    from interp.models import adapters

    real = adapters.adapter_for

    def broken(model):
        a = real(model)
        a.stacks = {"decoder": adapters.Stack(a.stacks["decoder"].blocks, attn="self_attn",
                                              out_proj="q_proj")}
        return a

    monkeypatch.setattr("interp.models.model.adapter_for", broken)
    result = coverage.check("llama")
    assert result.status == "fail" and "(c)" in result.reason


@pytest.mark.fast
def test_unknown_model_type_is_a_clear_error():
    with pytest.raises(InterpError, match="not_a_model"):
        coverage.sweep(["llama", "not_a_model"], progress=False)


@pytest.mark.slow
def test_sweep_has_no_regressions():
    """The full sweep (every causal-LM type, 2 workers) against docs/coverage.md.

    About 85 s of CPU in all (1-1.5 min wall on 2 free cores; 4-5 min on a shared, loaded machine).
    """
    before = recorded_status()
    results = coverage.sweep(jobs=2, time_limit=60, progress=False)
    regressed = [f"{r.model_type}: {r.status} ({r.reason})" for r in results
                 if before.get(r.model_type) == "pass" and r.status != "pass"]
    assert not regressed, "architectures that passed before fail now:\n" + "\n".join(regressed)
    unexplained = [r.model_type for r in results if r.status != "pass" and not r.reason.strip()]
    assert not unexplained, f"failures without a written reason: {', '.join(unexplained)}"
