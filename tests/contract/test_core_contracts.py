"""Every core: snapshot pickles and stays small, restore resumes it, and no core reads the wall clock."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from headrace.events import BarBatch, CrossSection, Target
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

I = "v:A/Q"
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
    f = BarFeatures(4.0, 2)
    for item in _features_items(n):
        yield from f.update(item)


def _account_items(n: int) -> Iterator[Any]:
    for i, b in enumerate(_bars(n)):
        targets = (Target(instrument=I, ts_event=b.ts_event, weight=0.1 * (i % 3), status="ok", volatility=0.01),)
        yield CrossSection(ts_event=b.ts_event, bars=(b,), targets=targets if i % 4 == 0 else ())


CORES: dict[str, tuple[Callable[[], Any], Callable[[Any], Any], Callable[[int], Iterator[Any]]]] = {
    "validate": (MarketValidator, MarketValidator.restore, _validator_items),
    "bars": (lambda: BarBuilder(I, 10), lambda s: BarBuilder.restore(10, s), _validator_items),
    "features": (lambda: BarFeatures(4.0, 2), lambda s: BarFeatures.restore(4.0, 2, s), _features_items),
    "cross_section": (lambda: CrossSectionCore([I], CrossSectionalMomentum(), SIZER, 2, 1),
                      lambda s: CrossSectionCore.restore([I], CrossSectionalMomentum(), SIZER, 2, 1, s), _cross_items),
    "account": (lambda: Account("main", ["v"], FX, SIM, 100.0, 1, 0.0),
                lambda s: Account.restore("main", ["v"], FX, SIM, 100.0, 1, 0.0, s), _account_items),
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
