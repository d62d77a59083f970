"""Editors the capture engine applies: head ablation (and attention calibration)."""

from interp.intervene.ablate import HeadAblation, ablate, expand_heads, mean_z  # noqa: F401
from interp.intervene.calibrate import Calibration, CalibrationError, Calibrator  # noqa: F401
from interp.intervene.head_search import SearchConfig, search_heads  # noqa: F401
