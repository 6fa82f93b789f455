from __future__ import annotations

import math
import pickle
import random

from hypothesis import given
from hypothesis import strategies as st

from headrace.events import BarBatch, FeatureBatch
from helpers import bar
from operators.features.bar_features import BarFeatures
from operators.portfolio.cross_section import CrossSectionCore
from operators.portfolio.sizing import VolTargetSizer
from operators.signals.momentum import CrossSectionalMomentum

UNIVERSE = ("v:A/Q", "v:B/Q", "v:C/Q")
SIZER = VolTargetSizer(target_volatility=0.5, max_weight=0.5, max_gross_leverage=1.0, long_only=False)


def core() -> CrossSectionCore:
    return CrossSectionCore(UNIVERSE, CrossSectionalMomentum(), SIZER, rebalance_bars=3, min_instruments=2)


def feature_batches(seed: int, n_bars: int, per_batch: int) -> dict[str, list[FeatureBatch]]:
    rng = random.Random(seed)
    out = {}
    for inst in UNIVERSE:
        feats = BarFeatures(4.0, 3)
        closes, c = [], 1.0
        for _ in range(n_bars):
            c *= math.exp(rng.gauss(0, 0.01))
            closes.append(c)
        bars = [bar(inst, 60 * i, x) for i, x in enumerate(closes) if rng.random() > 0.1]  # some bars missing
        batches = []
        for a in range(0, len(bars), per_batch):
            chunk = tuple(bars[a:a + per_batch])
            wm = chunk[-1].ts_event
            batches.append(FeatureBatch(instrument=inst, watermark=wm, bars=chunk,
                                        features=tuple(feats.update_bar(b) for b in chunk)))
        batches.append(FeatureBatch(instrument=inst, watermark=2**62, bars=(), features=()))
        out[inst] = batches
    return out


def interleave(streams: dict[str, list[FeatureBatch]], rng: random.Random) -> list[FeatureBatch]:
    queues = {k: list(v) for k, v in streams.items()}
    out = []
    while any(queues.values()):
        k = rng.choice(sorted(k for k, q in queues.items() if q))
        out.append(queues[k].pop(0))
    return out


@given(seed=st.integers(0, 10_000), order_seed=st.integers(0, 10_000), per_batch=st.integers(1, 9))
def test_cross_section_output_does_not_depend_on_arrival_order(seed, order_seed, per_batch) -> None:
    streams = feature_batches(seed, 40, per_batch)
    by_instrument = [b for k in UNIVERSE for b in streams[k]]
    first, second = core(), core()
    out1 = [x for b in by_instrument for x in first.update(b)] + first.flush()
    out2 = [x for b in interleave(streams, random.Random(order_seed)) for x in second.update(b)] + second.flush()
    assert out1 == out2
    times = [cs.ts_event for cs in out1]
    assert times == sorted(set(times))


def test_a_time_waits_until_every_instrument_has_passed_it() -> None:
    c = core()
    b = bar("v:A/Q", 0, 1.0)
    f = BarFeatures(4.0, 3).update(BarBatch(instrument="v:A/Q", watermark=60, bars=(b,)))[0]
    assert c.update(f) == []
    assert c.update(FeatureBatch(instrument="v:B/Q", watermark=60, bars=(), features=())) == []
    [cs] = c.update(FeatureBatch(instrument="v:C/Q", watermark=100, bars=(), features=()))
    assert cs.ts_event == 60 and cs.bars == (b,)


def test_rebalance_weights_follow_momentum_ranks_within_the_caps() -> None:
    streams = feature_batches(3, 60, 5)
    c = core()
    out = [x for k in UNIVERSE for b in streams[k] for x in c.update(b)] + c.flush()
    decided = [cs for cs in out if cs.targets]
    assert decided, "no rebalance happened"
    for cs in decided:
        w = {t.instrument: t.weight for t in cs.targets}
        assert sum(abs(x) for x in w.values()) <= 1.0 + 1e-12
        assert all(abs(x) <= 0.5 + 1e-12 for x in w.values())
        s = {x.instrument: x.score for x in cs.signals}
        best, worst = max(s, key=s.get), min(s, key=s.get)
        assert w[best] >= 0 >= w[worst]


def test_cross_section_restore_midway_is_invisible() -> None:
    streams = feature_batches(11, 50, 4)
    order = interleave(streams, random.Random(5))
    straight = core()
    expected = [x for b in order for x in straight.update(b)] + straight.flush()
    first = core()
    got = [x for b in order[:17] for x in first.update(b)]
    second = CrossSectionCore.restore(UNIVERSE, CrossSectionalMomentum(), SIZER, 3, 2,
                                      pickle.loads(pickle.dumps(first.snapshot())))
    got += [x for b in order[17:] for x in second.update(b)] + second.flush()
    assert got == expected


# -- staleness ------------------------------------------------------------------------------------

def batches_until(inst: str, closes: list[float], stop: int | None = None, resume: int | None = None,
                  end: int = 2**62) -> list[FeatureBatch]:
    """One batch per bar of `inst` (none from bar `stop` to bar `resume`), then a final watermark."""
    feats = BarFeatures(4.0, 3)
    out = []
    for i, c in enumerate(closes):
        if stop is not None and stop <= i < (resume if resume is not None else len(closes)):
            out.append(FeatureBatch(instrument=inst, watermark=60 * i + 60, bars=(), features=()))
            continue
        b = bar(inst, 60 * i, c)
        out.append(FeatureBatch(instrument=inst, watermark=b.ts_event, bars=(b,), features=(feats.update_bar(b),)))
    out.append(FeatureBatch(instrument=inst, watermark=end, bars=(), features=()))
    return out


def walk(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    c, out = 1.0, []
    for _ in range(n):
        c *= math.exp(rng.gauss(0, 0.01))
        out.append(c)
    return out


def staleness_core(universe: tuple[str, ...] = UNIVERSE) -> CrossSectionCore:
    return CrossSectionCore(universe, CrossSectionalMomentum(), SIZER, rebalance_bars=3, min_instruments=2,
                            stale_after_ns=600)


def test_an_instrument_whose_data_stopped_leaves_the_cross_section_and_rejoins_when_it_resumes() -> None:
    a, b, c = UNIVERSE
    streams = {a: batches_until(a, walk(1, 80)), b: batches_until(b, walk(2, 80)),
               c: batches_until(c, walk(3, 80), stop=20, resume=50)}  # C's last bar closes at 1200
    core = staleness_core()
    out = [x for k in UNIVERSE for batch in streams[k] for x in core.update(batch)] + core.flush()
    statuses = [s for cs in out for s in cs.statuses]
    assert [(s.instrument, s.status, s.ts_event, s.last_bar_ts) for s in statuses] == [
        (c, "stale", 1860, 1200),  # the first processed time more than 600 s after its last bar
        (c, "live", 3060, 3060),  # its first bar again (bar 50 closes at 3060)
    ]
    stale_decisions = [cs for cs in out if cs.targets and 1860 <= cs.ts_event < 3060]
    live_decisions = [cs for cs in out if cs.targets and (cs.ts_event < 1860 or cs.ts_event >= 3060)]
    assert stale_decisions and live_decisions
    for cs in stale_decisions:  # not ranked, no target: the live instruments share the sizing
        assert {t.instrument for t in cs.targets} == {s.instrument for s in cs.signals} == {a, b}
    assert all(c in {t.instrument for t in cs.targets} for cs in live_decisions)
    assert any(c in {s.instrument for s in cs.signals} for cs in live_decisions if cs.ts_event >= 3060)


def test_while_an_instrument_is_stale_the_others_are_sized_as_if_it_were_not_there() -> None:
    a, b, c = UNIVERSE
    closes = {a: walk(1, 60), b: walk(2, 60), c: walk(3, 60)}
    with_c = staleness_core()
    out = [x for k in UNIVERSE for batch in batches_until(k, closes[k], stop=15 if k == c else None)
           for x in with_c.update(batch)] + with_c.flush()
    without_c = staleness_core((a, b))
    ref = [x for k in (a, b) for batch in batches_until(k, closes[k]) for x in without_c.update(batch)] \
        + without_c.flush()
    stale_from = next(s.ts_event for cs in out for s in cs.statuses if s.status == "stale")
    got = {cs.ts_event: cs.targets for cs in out if cs.targets and cs.ts_event >= stale_from}
    want = {cs.ts_event: cs.targets for cs in ref if cs.targets and cs.ts_event >= stale_from}
    assert got and got == want


def test_staleness_survives_a_restore() -> None:
    c = UNIVERSE[2]
    order = [x for k in UNIVERSE for x in batches_until(k, walk(7, 60), stop=10 if k == c else None, resume=40)]
    order = interleave({k: [x for x in order if x.instrument == k] for k in UNIVERSE}, random.Random(2))
    straight = staleness_core()
    expected = [x for batch in order for x in straight.update(batch)] + straight.flush()
    assert any(cs.statuses for cs in expected)
    for cut in (40, 90, 130):
        first = staleness_core()
        got = [x for batch in order[:cut] for x in first.update(batch)]
        second = CrossSectionCore.restore(UNIVERSE, CrossSectionalMomentum(), SIZER, 3, 2,
                                          pickle.loads(pickle.dumps(first.snapshot())), stale_after_ns=600)
        got += [x for batch in order[cut:] for x in second.update(batch)] + second.flush()
        assert got == expected
