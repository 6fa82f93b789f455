from __future__ import annotations

import pytest

from helpers import demo_plan as _demo_plan
from sources.replay_plan import ReplayPlan


@pytest.fixture(scope="session")
def demo_plan() -> ReplayPlan:
    """The first 600 bars of the 10 real Bittrex instruments, in slices of 500 rows."""
    return _demo_plan()


@pytest.fixture(scope="session")
def tick_plan() -> ReplayPlan:
    """60,000 synthetic trades and quotes over a day, 10 instruments on two venues, in slices of 2,000 rows."""
    from sources import synthetic

    return ReplayPlan.build(synthetic.generate(60_000, seed=11), 2_000)
