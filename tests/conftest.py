"""Shared fixtures. Tests verify the module after every pass (run_pipeline does by default)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=30, deadline=None)
settings.register_profile("dev", max_examples=15, deadline=None)
# `pytest --hypothesis-profile=soak` (make soak): hunt for bugs the default runs have not drawn yet.
settings.register_profile("soak", max_examples=400, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
