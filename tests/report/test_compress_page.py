"""The `interp compress` page: intervals, every cell, the summary in words."""

import pytest

from interp.cli.compress_run import summarise
from interp.report.compress import cells_table, pareto_figure, write_page

pytestmark = pytest.mark.fast


def _doc():
    def cell(method, fraction, hits, draw=0):
        return {"method": method, "draw": draw, "fraction": fraction, "length": 64, "recalled": hits,
                "accuracy": sum(hits) / len(hits), "perplexity": 10 + fraction,
                "kv_bytes": int(100 * fraction), "kv_bytes_full": 100, "stored_bytes": 2**20,
                "peak_rss_mb": 512.0, "prefill_s": 1.0,
                "decode_tok_s": 5.0}

    cells = [cell("full", 1.0, [1, 1, 1, 0]), cell("retrieval", 0.25, [1, 1, 1, 0]),
             cell("random", 0.25, [0, 0, 0, 0]), cell("random", 0.25, [1, 0, 0, 0], draw=1)]
    return {"model": "tiny", "config": {"window": 8}, "cells": cells, "overlap": {"0.25": 0.5},
            "summary": summarise(cells, [64])}


def test_page_has_intervals_cells_and_summary(tmp_path):
    doc = _doc()
    fig = pareto_figure(doc)
    retrieval = next(t for t in fig.data if t.name == "retrieval @ 64" and t.showlegend is not False)
    assert list(retrieval.x) == [0.25, 1.0]  # the curve ends at the uncompressed model
    lo, hi = retrieval.error_y.arrayminus[0], retrieval.error_y.array[0]
    assert 0.75 - lo == pytest.approx(0.3006, abs=1e-3) and 0.75 + hi == pytest.approx(0.9544, abs=1e-3)
    table = cells_table(doc)
    assert table.count("<tr>") == 1 + 4 and "random1" in table and "3/4 = 0.75 [0.30, 0.95]" in table
    write_page(doc, tmp_path / "compress.html")
    page = (tmp_path / "compress.html").read_text()
    assert "<b>0.25</b>" in page and "Jaccard overlap 0.50" in page and "window=8" in page


def test_pivot_counts_recalled_trials_per_fraction():
    from interp.cli.compress_run import Experiment

    lines = Experiment.pivot(_doc()).splitlines()
    assert lines[0] == "| 64 tokens | 0.25 (KV 0.25) | 1 (KV 1.00) |"
    assert "| retrieval | 3/4 |  |" in lines and "| random1 | 1/4 |  |" in lines
    assert "| full |  | 3/4 |" in lines
