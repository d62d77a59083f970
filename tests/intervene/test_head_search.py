"""Head search against exhaustive search on small synthetic objectives, budgets, and bad input."""

import itertools

import pytest

from interp.errors import InterpError
from interp.intervene.head_search import SearchConfig, search_heads

pytestmark = pytest.mark.fast

GOOD = {(2, 0): 3.0, (3, 1): 2.0, (4, 2): 1.0}


def additive(heads):
    """Each good head adds its value, every other head costs 0.5: the best set is exactly GOOD."""
    return (sum(GOOD.get(h, -0.5) for h in set(heads)),)


def exhaustive(score, heads, max_size):
    best = ((float("-inf"),), None)
    for k in range(max_size + 1):
        for combo in itertools.combinations(heads, k):
            best = max(best, (score(list(combo)), sorted(combo)))
    return best


def test_matches_exhaustive_search_when_the_budget_allows_it():
    calls = []

    def score(heads):
        calls.append(list(heads))
        return additive(heads)

    r = search_heads(score, n_layers=6, n_heads=3, config=SearchConfig(budget=40, max_heads=4),
                     progress=False)
    candidates = [(layer, h) for layer in range(2, 5) for h in range(3)]
    best_score, best_set = exhaustive(additive, candidates, 4)
    assert sorted(r.heads) == best_set and r.score == best_score
    assert r.baseline == (0.0,) and calls[0] == []
    assert all(h[0] in (2, 3, 4) for c in calls for h in c)  # first two and last layer skipped
    assert r.evaluations == len(calls) <= 40


def test_greedy_rejects_heads_that_only_help_alone():
    def score(heads):  # (5, 0) helps alone but conflicts with (2, 0)
        s = set(heads)
        value = 2.0 * ((2, 0) in s) + 1.5 * ((5, 0) in s) - 4.0 * ({(2, 0), (5, 0)} <= s)
        return (value,)

    r = search_heads(score, n_layers=8, n_heads=1, config=SearchConfig(budget=30), progress=False)
    assert r.heads == [(2, 0)]
    assert any(step["stage"] == "greedy" and step["heads"] == [[2, 0], [5, 0]] for step in r.history)


def test_budget_is_respected_and_layers_screened_first():
    r = search_heads(additive, n_layers=30, n_heads=9, config=SearchConfig(budget=14, max_heads=3),
                     progress=False)
    assert r.evaluations <= 14
    assert any(k.endswith(":*") for k in r.screened)  # not every head fits: whole layers first
    assert r.score >= r.baseline


def test_layers_and_ties_broken_by_second_component():
    def score(heads):  # same accuracy; the second component prefers head (7, 1)
        return (0.5, 1.0 if (7, 1) in heads else 0.0)

    r = search_heads(score, n_layers=10, n_heads=2, config=SearchConfig(layers=[7], budget=10),
                     progress=False)
    assert r.heads == [(7, 1)]


def test_bad_input():
    with pytest.raises(InterpError, match="out of range"):
        search_heads(additive, n_layers=4, n_heads=2, config=SearchConfig(layers=[9]), progress=False)
    with pytest.raises(InterpError, match="no candidate layers"):
        search_heads(additive, n_layers=3, n_heads=2, progress=False)
    with pytest.raises(InterpError, match="budget"):
        search_heads(additive, n_layers=8, n_heads=2, config=SearchConfig(budget=1), progress=False)
