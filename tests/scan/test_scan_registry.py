import pytest

from interp.errors import InterpError
from interp.scan.registry import ANALYSES, UnknownAnalysisError, resolve


@pytest.mark.fast
def test_resolve_known_names_in_given_order_without_duplicates():
    chosen = resolve("heads, heads")
    assert [a.name for a in chosen] == ["heads"]
    assert "heads" in [a.name for a in resolve(None)]


@pytest.mark.fast
def test_unknown_analysis_lists_the_available_ones():
    with pytest.raises(UnknownAnalysisError, match="unknown analysis 'inductoin'.*heads"):
        resolve("heads,inductoin")
    with pytest.raises(UnknownAnalysisError, match="no analysis named"):
        resolve(" , ")


@pytest.mark.fast
def test_unknown_setting_is_a_clear_error():
    resolve("heads")
    with pytest.raises(InterpError, match="has no setting n_randmo"):
        ANALYSES["heads"].make_config({"n_randmo": 3})
    assert ANALYSES["heads"].make_config({"n_random": 3}).n_random == 3


@pytest.mark.fast
def test_interp_scan_is_the_package_and_run_scan_the_function():
    import interp
    import interp.scan

    assert {"heads", "sinks", "retrieval", "saliency", "binding"} <= set(interp.scan.available())
    assert callable(interp.run_scan) and interp.run_scan is interp.scan.run_scan
    assert interp.scan.__name__ == "interp.scan"
