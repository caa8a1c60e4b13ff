"""Shared pytest configuration: Hypothesis profiles.

Select a profile with HYPOTHESIS_PROFILE; without it, "ci" is used when the CI
environment variable is set and "dev" otherwise.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=50, deadline=None)


def _default_profile() -> str:
    return "ci" if os.environ.get("CI") else "dev"


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default_profile()))
