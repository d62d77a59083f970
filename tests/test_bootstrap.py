"""The one bootstrap (`interp.bootstrap.mean_ci`) against scipy's percentile bootstrap."""

import numpy as np
import pytest
import torch
from scipy.stats import bootstrap

from interp.bootstrap import mean_ci
from interp.errors import InterpError

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("kind", ["binary", "skewed", "small"])
def test_interval_matches_scipy_percentile_bootstrap(kind):
    rng = np.random.default_rng(0)
    values = {"binary": (rng.random(300) < 0.7).astype(float), "skewed": rng.exponential(size=200),
              "small": rng.normal(size=12)}[kind]
    lo, hi = mean_ci(torch.tensor(values), n_boot=20000, seed=1)
    ref = bootstrap((values,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                    random_state=2).confidence_interval
    width = ref.high - ref.low
    assert abs(lo - ref.low) < 0.05 * width and abs(hi - ref.high) < 0.05 * width  # Monte-Carlo error only


def test_same_seed_same_interval_and_bad_input():
    v = torch.rand(50, generator=torch.Generator().manual_seed(0))
    assert mean_ci(v, seed=3) == mean_ci(v, seed=3) != mean_ci(v, seed=4)
    with pytest.raises(InterpError, match="empty"):
        mean_ci(torch.tensor([]))
    with pytest.raises(InterpError, match="level"):
        mean_ci(v, level=1.5)
