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
