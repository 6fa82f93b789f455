from __future__ import annotations

import pytest

from helpers import demo_plan as _demo_plan
from sources.replay_plan import ReplayPlan


@pytest.fixture(scope="session")
def demo_plan() -> ReplayPlan:
    """The first 600 bars of the 10 real Bittrex instruments, in slices of 500 rows."""
    return _demo_plan()
