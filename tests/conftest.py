"""Shared fixtures and hypothesis profiles (`ci`: derandomised, no deadline; `deep`: more examples)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SHARED_DATA = ROOT.parent / "shared" / "data"

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from headrace.blas import single_threaded_blas  # noqa: E402

single_threaded_blas()  # as every flow does; xdist's two workers then do not fight BLAS threads for two cores


# ---------------------------------------------------------------------------------------------------
# One real replay into an embedded ClickHouse (chDB), shared by the ClickHouse and dashboard tests.

from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402


@dataclass(frozen=True)
class ReplayedRun:
    """A run written to a real embedded ClickHouse: reconnect with ``Store.connect(dsn)`` in each test.

    chDB serves one database path per process at a time, so a test that opens another path closes this
    one; `Store.connect` reopens it.
    """

    dsn: str
    run_id: str


@pytest.fixture(scope="session")
def replayed_run(tmp_path_factory: pytest.TempPathFactory) -> ReplayedRun:
    """The first 600 bars of the 10 real Bittrex instruments replayed (small strategy) into chDB on disk."""
    from bytewax.testing import run_main

    from flows.trading import build_flow
    from helpers import demo_plan, small_config
    from sinks.clickhouse import Store

    dsn = f"chdb://{tmp_path_factory.mktemp('clickhouse')}"
    store = Store.connect(dsn)
    store.init_schema()
    # the portfolio engine records risk too, so its tables (and the portfolio dashboard) have rows
    run_main(build_flow(demo_plan(), small_config("portfolio.record_risk=true"), "fixture-run", dsn=dsn))
    Store.connect(dsn).optimize()
    return ReplayedRun(dsn=dsn, run_id="fixture-run")
