"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings

# `xbar program` notes which model is on which board under $XBAR_STATE_DIR (else the
# user's ~/.local/state): tests, and the commands they start, keep theirs apart.
os.environ["XBAR_STATE_DIR"] = tempfile.mkdtemp(prefix="xbar-state-")

# CI machines are slower and shared: no per-example deadlines, a fixed, modest budget.
settings.register_profile(
    "xbar", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
# HYPOTHESIS_PROFILE=thorough for a long local search.
settings.register_profile("thorough", parent=settings.get_profile("xbar"), max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "xbar"))
