"""Leverage tiers from market metadata: Binance's brackets in ccxt's recorded fixture, ccxt fetchLeverageTiers
results, and the one-tier fallback from a market's leverage limit (ccxt's Bybit markets)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from headrace.errors import DataSourceError
from headrace.leverage_tiers import by_instrument, load_tiers
from helpers import SHARED_DATA
from operators.risk.margin import Tier, maintenance_margin

CCXT_BINANCE = SHARED_DATA / "ccxt-static" / "response" / "binance.json"
CCXT_BYBIT = SHARED_DATA / "ccxt-static" / "response" / "bybit.json"
BYBIT_MARKETS = SHARED_DATA / "markets" / "ccxt" / "bybit.json"
BINANCE_MARKETS = SHARED_DATA / "markets" / "ccxt" / "binance.json"

# Binance's 1000LUNC/USDT:USDT tiers 1-3 as ccxt's fetchLeverageTiers returns them (recorded in freqtrade's
# freqtrade/exchange/binance_leverage_tiers.json); info.cum is Binance's own maintenance amount.
LUNC = [
    {"tier": 1.0, "currency": "USDT", "minNotional": 0.0, "maxNotional": 5000.0, "maintenanceMarginRate": 0.01,
     "maxLeverage": 50.0, "info": {"bracket": "1", "initialLeverage": "50", "notionalCap": "5000",
                                   "notionalFloor": "0", "maintMarginRatio": "0.01", "cum": "0.0"}},
    {"tier": 2.0, "currency": "USDT", "minNotional": 5000.0, "maxNotional": 25000.0, "maintenanceMarginRate": 0.025,
     "maxLeverage": 20.0, "info": {"bracket": "2", "initialLeverage": "20", "notionalCap": "25000",
                                   "notionalFloor": "5000", "maintMarginRatio": "0.025", "cum": "75.0"}},
    {"tier": 3.0, "currency": "USDT", "minNotional": 25000.0, "maxNotional": 400000.0, "maintenanceMarginRate": 0.05,
     "maxLeverage": 10.0, "info": {"bracket": "3", "initialLeverage": "10", "notionalCap": "400000",
                                   "notionalFloor": "25000", "maintMarginRatio": "0.05", "cum": "700.0"}},
]


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"needs the shared data: {p} is missing")


def test_binance_brackets_from_ccxt_fixture_get_binances_cum() -> None:
    _need(CCXT_BINANCE)
    tiers = load_tiers(CCXT_BINANCE, "binance", default_max_leverage=20.0)
    assert set(tiers) == {"BTC/USDT:USDT", "ETH/USDT:USDT", "LTC/USDT:USDT", "ADA/USDT:USDT", "BTC/USD:BTC"}
    ada = tiers["ADA/USDT:USDT"]  # floors 0, 10000, 50000, 250000, ... rates 0.0065, 0.01, 0.02, 0.05, ...
    assert [t.max_notional for t in ada[:3]] == [10_000.0, 50_000.0, 250_000.0]
    assert [t.maintenance_rate for t in ada[:3]] == [0.0065, 0.01, 0.02]
    assert ada[0].maintenance_amount == 0.0
    assert ada[1].maintenance_amount == pytest.approx(10_000 * (0.01 - 0.0065))  # 35
    assert ada[2].maintenance_amount == pytest.approx(35 + 50_000 * (0.02 - 0.01))  # 535
    assert ada[-1].max_notional == math.inf and ada[-1].maintenance_rate == 0.25
    assert all(t.max_leverage == 20.0 for t in ada)
    for t in ada[:-1]:  # maintenance margin is continuous at every bound
        assert maintenance_margin(ada, t.max_notional) == pytest.approx(maintenance_margin(ada, t.max_notional + 1e-6))


def test_ccxt_leverage_tiers_keep_binance_cum(tmp_path: Path) -> None:
    p = tmp_path / "tiers.json.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        json.dump({"1000LUNC/USDT:USDT": LUNC}, f)
    tiers = load_tiers(p, "binance")["1000LUNC/USDT:USDT"]
    assert tiers == (Tier(5_000.0, 50.0, 0.01, 0.0), Tier(25_000.0, 20.0, 0.025, 75.0),
                     Tier(math.inf, 10.0, 0.05, 700.0))
    # Binance's cum is the continuity rule: 75 = 5000 x (0.025 - 0.01), 700 = 75 + 25000 x (0.05 - 0.025)
    no_cum = [{k: v for k, v in row.items() if k != "info"} for row in LUNC]
    (tmp_path / "plain.json").write_text(json.dumps({"X/USDT:USDT": no_cum}))
    assert load_tiers(tmp_path / "plain.json", "binance")["X/USDT:USDT"] == tiers
    assert by_instrument("binance", {"1000LUNC/USDT:USDT": tiers}) == {"binance:1000LUNC/USDT:USDT": tiers}


def test_market_leverage_limit_is_a_one_tier_fallback_and_real_tiers_come_first(tmp_path: Path) -> None:
    _need(BYBIT_MARKETS, BINANCE_MARKETS)
    tiers = load_tiers(BYBIT_MARKETS, "bybit", default_maintenance_rate=0.005)
    assert tiers["XRP/USDT:USDT"] == (Tier(math.inf, 75.0, 0.005),)  # limits.leverage.max of Bybit's market
    assert tiers["ZRX/USDT:USDT"] == (Tier(math.inf, 25.0, 0.005),)
    assert "XRP/USDT" not in tiers  # spot markets have no tiers
    assert load_tiers(BINANCE_MARKETS, "binance", default_maintenance_rate=0.005) == {}  # no leverage limits there
    p = tmp_path / "xrp.json"
    p.write_text(json.dumps({"XRP/USDT:USDT": LUNC}))
    both = load_tiers([p, BYBIT_MARKETS], "bybit", default_maintenance_rate=0.005)
    assert both["XRP/USDT:USDT"][0] == Tier(5_000.0, 50.0, 0.01, 0.0)
    assert both["ADA/USDT:USDT"] == (Tier(math.inf, 75.0, 0.005),)


def test_errors_name_the_file_and_key(tmp_path: Path) -> None:
    _need(CCXT_BINANCE, CCXT_BYBIT, BYBIT_MARKETS)
    with pytest.raises(DataSourceError, match=r"binance.json.*leverageBrackets\.BTC/USDT:USDT.*default_max_leverage"):
        load_tiers(CCXT_BINANCE, "binance")
    with pytest.raises(DataSourceError, match=r"bybit.json.*BTC/USDT:USDT.*default_maintenance_rate"):
        load_tiers(BYBIT_MARKETS, "bybit")
    with pytest.raises(DataSourceError, match=r"bybit.json.*options.leverageBrackets is missing"):
        load_tiers(CCXT_BYBIT, "bybit")
    with pytest.raises(DataSourceError, match=r"is for venue 'binance', not 'bybit'"):
        load_tiers(CCXT_BINANCE, "bybit", default_max_leverage=20.0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"X/USDT:USDT": [{**LUNC[0], "maxNotional": None}]}))
    with pytest.raises(DataSourceError, match=r"bad.json.*X/USDT:USDT\[0\]\.maxNotional is missing"):
        load_tiers(bad, "binance")
    bad.write_text(json.dumps({"X/USDT:USDT": [LUNC[1], LUNC[0], LUNC[2]]}))
    with pytest.raises(DataSourceError, match=r"X/USDT:USDT: tiers must be ordered by max_notional"):
        load_tiers(bad, "binance")
    bad.write_text(json.dumps({"X/USDT:USDT": [{**LUNC[0], "maintenanceMarginRate": "abc"}]}))
    with pytest.raises(DataSourceError, match=r"X/USDT:USDT\[0\]\.maintenanceMarginRate: expected a number"):
        load_tiers(bad, "binance")
    with pytest.raises(DataSourceError, match=r"missing.json.*cannot read JSON"):
        load_tiers(tmp_path / "missing.json", "binance")
