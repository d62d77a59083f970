"""Editors the capture engine applies: head ablation (and attention calibration)."""

from interp.intervene.ablate import HeadAblation, ablate, expand_heads, mean_z  # noqa: F401
