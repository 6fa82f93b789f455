"""Every core: snapshot pickles and stays small, restore resumes it, and no core reads the wall clock."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from headrace.events import BarBatch, CrossSection, InstrumentStatus, Target
from helpers import bar, market_slice, trades
from operators.bars.bar_builder import BarBuilder
from operators.execution.sim_venue import SimulatedVenue, VenueCosts
from operators.features.bar_features import BarFeatures
from operators.portfolio.cross_section import CrossSectionCore
from operators.portfolio.sizing import VolTargetSizer
from operators.positions.account import Account
from operators.positions.fx import FxTable
from operators.signals.momentum import CrossSectionalMomentum
from operators.validation.market_checks import MarketValidator

I, J = "v:A/Q", "v:B/Q"
SIZER = VolTargetSizer(0.5, 0.5, 1.0, False)
SIM = SimulatedVenue({"v": VenueCosts(10.0, 5.0)})
FX = FxTable.resolve("Q", [I], {})


def _bars(n: int) -> list:
    return [bar(I, 60 * i, 100.0 + (i % 7)) for i in range(n)]


def _validator_items(n: int) -> Iterator[Any]:
    for i in range(n):
        yield market_slice(I, 10 * i + 9, trades=trades(I, [10 * i, 10 * i + 5], [1.0, 1.1], ids=[f"{i}a", f"{i}b"]))


def _features_items(n: int) -> Iterator[Any]:
    for b in _bars(n):
        yield BarBatch(instrument=I, watermark=b.ts_event, bars=(b,))


def _cross_items(n: int) -> Iterator[Any]:
    # J stops after its second bar and comes back at bar 30: stale from bar 10 on (stale_after 500 s), so the
    # cut at item 23 falls while it is stale
    fi, fj = BarFeatures(4.0, 2), BarFeatures(4.0, 2)
    for i, b in enumerate(_bars(n)):
        yield from fi.update(BarBatch(instrument=I, watermark=b.ts_event, bars=(b,)))
        bj = () if 2 <= i < 30 else (bar(J, 60 * i, 50.0 + (i % 5)),)
        yield from fj.update(BarBatch(instrument=J, watermark=b.ts_event, bars=bj))


def _account_items(n: int) -> Iterator[Any]:
    # quoted bars; no bars from 20 to 23, stale at 21 (its working order expires), live again at 24
    for i, b in enumerate(_bars(n)):
        b = replace(b, bid=b.close * 0.999, ask=b.close * (1.0 + 0.0005 * (i % 3)))
        ts = b.ts_event
        targets = (Target(instrument=I, ts_event=ts, weight=0.1 * (i % 3) + 0.1, status="ok", volatility=0.01),)
        status = {21: "stale", 24: "live"}.get(i % 50)
        statuses = () if status is None else (InstrumentStatus(instrument=I, ts_event=ts, status=status,  # type: ignore[arg-type]
                                                               last_bar_ts=ts - 60 * (i % 50 - 19)),)
        yield CrossSection(ts_event=ts, bars=() if 20 <= i % 50 < 24 else (b,),
                           targets=targets if i % 4 == 0 else (), statuses=statuses)


CORES: dict[str, tuple[Callable[[], Any], Callable[[Any], Any], Callable[[int], Iterator[Any]]]] = {
    "validate": (MarketValidator, MarketValidator.restore, _validator_items),
    "bars": (lambda: BarBuilder(I, 10), lambda s: BarBuilder.restore(10, s), _validator_items),
    "features": (lambda: BarFeatures(4.0, 2), lambda s: BarFeatures.restore(4.0, 2, s), _features_items),
    "cross_section": (lambda: CrossSectionCore([I, J], CrossSectionalMomentum(), SIZER, 2, 1, stale_after_ns=500),
                      lambda s: CrossSectionCore.restore([I, J], CrossSectionalMomentum(), SIZER, 2, 1, s,
                                                         stale_after_ns=500), _cross_items),
    "account": (lambda: Account("main", ["v"], FX, SIM, initial_cash=100.0, min_trade_weight=0.0, latency_ns=90),
                lambda s: Account.restore("main", ["v"], FX, SIM, s, initial_cash=100.0, min_trade_weight=0.0,
                                          latency_ns=90), _account_items),
}


@pytest.mark.parametrize("name", sorted(CORES))
def test_core_restored_midway_continues_exactly(name: str) -> None:
    fresh, restore, items = CORES[name]
    data = list(items(40))
    straight = fresh()
    expected = [o for x in data for o in straight.update(x)] + straight.flush()
    first = fresh()
    got = [o for x in data[:23] for o in first.update(x)]
    blob = pickle.dumps(first.snapshot())
    second = restore(pickle.loads(blob))
    got += [o for x in data[23:] for o in second.update(x)] + second.flush()
    assert got == expected


@pytest.mark.parametrize("name", sorted(CORES))
def test_core_snapshot_stays_small_as_input_grows(name: str) -> None:
    fresh, _, items = CORES[name]
    sizes = []
    for n in (50, 500):
        core = fresh()
        for x in items(n):
            core.update(x)
        sizes.append(len(pickle.dumps(core.snapshot())))
    assert sizes[1] < 4 * sizes[0] + 2048, f"snapshot grew with input: {sizes}"


@pytest.mark.parametrize("name", sorted(CORES))
def test_core_never_reads_the_wall_clock(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def banned(*_: object) -> None:
        raise AssertionError("a core read the wall clock")

    for fn in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, fn, banned)
    fresh, _, items = CORES[name]
    core = fresh()
    for x in items(30):
        core.update(x)
    core.flush()
    core.snapshot()


def test_the_contract_inputs_take_cores_through_staleness_and_expiry() -> None:
    fresh, _, items = CORES["cross_section"]
    core = fresh()
    statuses = [s.status for x in items(40) for cs in core.update(x) for s in cs.statuses]
    assert statuses == ["stale", "live"]
    fresh, _, items = CORES["account"]
    core = fresh()
    outs = [o for x in items(40) for o in core.update(x)] + core.flush()
    assert {type(o).__name__ for o in outs} >= {"Order", "Fill", "OrderStatus", "Position", "Equity"}
    assert any(getattr(o, "stale", False) for o in outs)
