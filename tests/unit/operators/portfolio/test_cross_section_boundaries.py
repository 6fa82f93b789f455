"""The cross-section's counting boundaries: which processed time rebalances, and how many instruments it needs."""

from __future__ import annotations

from headrace.events import CrossSection, FeatureBatch, Features
from helpers import bar
from operators.portfolio.cross_section import CrossSectionCore
from operators.portfolio.sizing import VolTargetSizer
from operators.signals.momentum import CrossSectionalMomentum

UNIVERSE = ("v:A/Q", "v:B/Q", "v:C/Q", "v:D/Q")
SIZER = VolTargetSizer(target_volatility=0.5, max_weight=0.5, max_gross_leverage=1.0, long_only=False)
TF = 60 * 10**9


def core(rebalance_bars: int, min_instruments: int) -> CrossSectionCore:
    return CrossSectionCore(UNIVERSE, CrossSectionalMomentum(), SIZER, rebalance_bars=rebalance_bars,
                            min_instruments=min_instruments)


def batch(inst: str, i: int, *, ready: bool = True) -> FeatureBatch:
    """Bar i of `inst` with its features: momentum and volatility when `ready`, none yet otherwise."""
    b = bar(inst, TF * i, 1.0 + 0.01 * UNIVERSE.index(inst), tf=TF)
    f = Features(instrument=inst, ts_event=b.ts_event, close=b.close, log_return=0.0,
                 volatility=0.01 if ready else None, momentum=0.1 * UNIVERSE.index(inst) - 0.15 if ready else None)
    return FeatureBatch(instrument=inst, watermark=b.ts_event, bars=(b,), features=(f,))


def run(c: CrossSectionCore, n_times: int, ready: tuple[str, ...] = UNIVERSE) -> list[CrossSection]:
    out: list[CrossSection] = []
    for i in range(n_times):
        for inst in UNIVERSE:
            out += c.update(batch(inst, i, ready=inst in ready))
    return out


def test_the_first_rebalance_is_exactly_the_nth_processed_time_and_then_every_nth() -> None:
    out = run(core(rebalance_bars=4, min_instruments=2), 13)
    assert [cs.ts_event for cs in out] == [TF * (i + 1) for i in range(13)]  # each time processed once, in order
    assert [n for n, cs in enumerate(out, start=1) if cs.targets] == [4, 8, 12]
    assert all(len(cs.bars) == 4 for cs in out)


def test_rebalancing_every_time_decides_on_the_first_time_already() -> None:
    out = run(core(rebalance_bars=1, min_instruments=2), 3)
    assert [bool(cs.targets) for cs in out] == [True, True, True]


def test_exactly_min_instruments_with_features_decide() -> None:
    [cs] = [cs for cs in run(core(rebalance_bars=1, min_instruments=3), 1, ready=UNIVERSE[:3])]
    assert [t.instrument for t in cs.targets] == list(UNIVERSE)  # a target for every instrument
    assert [s.instrument for s in cs.signals] == list(UNIVERSE[:3])  # scores only for those with features
    assert any(t.weight != 0 for t in cs.targets)
    assert {t.instrument: t.weight for t in cs.targets}["v:D/Q"] == 0.0


def test_one_instrument_fewer_than_min_instruments_does_not_decide() -> None:
    [cs] = [cs for cs in run(core(rebalance_bars=1, min_instruments=4), 1, ready=UNIVERSE[:3])]
    assert cs.targets == () and cs.signals == ()
