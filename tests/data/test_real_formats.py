"""Every recorded-data layout in ../shared/data parses into the normalised schema, checked against the raw file.

The demo data's layout (Bittrex Feather bars) is checked in test_demo_formats.py, which needs no ../shared."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from headrace.errors import DataSourceError
from headrace.events import MarketSlice
from helpers import SHARED_DATA
from operators.bars.bar_builder import BarBuilder
from operators.validation.market_checks import MarketValidator
from sources.formats import read_paths
from sources.replay_plan import ReplayPlan

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data beside the repo")

NS_PER_MS = 1_000_000


def one(path: Path) -> pl.DataFrame:
    [frame] = read_paths([str(path)])
    assert frame.frame["problem"].null_count() == frame.frame.height, "real data should parse cleanly"
    return frame.frame


def test_kraken_headerless_ohlcvt_is_seconds_and_names_kraken() -> None:
    path = SHARED_DATA / "cross_venue/kraken/XBTUSD_5.csv.gz"
    with gzip.open(path, "rt") as f:
        first = f.readline().strip().split(",")
    [frame] = read_paths([str(path)])
    assert frame.instrument == "kraken:BTC/USD" and frame.timeframe_ns == 300 * 10**9
    row = frame.frame.row(0, named=True)
    assert row["ts_open"] == int(first[0]) * 10**9
    assert [row[c] for c in ("open", "high", "low", "close", "volume")] == [float(x) for x in first[1:6]]
    assert frame.frame.height == 25901


def test_binance_us_iso_times_parse_to_utc_ns() -> None:
    path = SHARED_DATA / "cross_venue/binanceus/BTCUSDC_1m_20230301_20230321.csv.gz"
    [frame] = read_paths([str(path)])
    assert frame.instrument == "binanceus:BTC/USDC" and frame.frame.height == 30240
    assert frame.frame["ts_open"][0] == 1_677_628_800 * 10**9  # 2023-03-01 00:00 UTC
    assert frame.frame["ts_open"].diff().drop_nulls().unique().to_list() == [60 * 10**9]


def test_binance_kline_dump_is_headerless_ms() -> None:
    path = SHARED_DATA / "ohlcv/binance/ADABTC-1m-2021-11-27.csv"
    first = path.read_text().splitlines()[0].split(",")
    got = one(path)
    assert got.height == 10
    assert got["ts_open"][0] == int(first[0]) * NS_PER_MS and got["close"][0] == float(first[4])


def test_binance_trades_buyer_maker_means_the_taker_sold() -> None:
    path = SHARED_DATA / "ticks/binance/btcusdt-trades.parquet"
    raw = pl.read_parquet(path)
    got = one(path)
    expected_side = [-1 if m == "True" else 1 for m in raw["buyer_maker"].to_list()]
    assert got["side"].to_list() == expected_side
    assert got["amount"].to_list() == raw["quantity"].to_list()
    assert got["trade_id"].to_list() == [str(x) for x in raw["trade_id"].to_list()]


def test_tardis_trades_and_quotes_are_microseconds_with_receive_times() -> None:
    t = one(SHARED_DATA / "ticks/tardis/bitmex_trades_XBTUSD.csv")
    assert t["ts_event"][0] == 1583020803145000 * 1000 and t["ts_recv"][0] == 1583020803307160 * 1000
    q = one(SHARED_DATA / "ticks/tardis/huobi-dm-swap_quotes_BTC-USD.csv")
    assert (q["bid"][0], q["ask"][0], q["bid_size"][0], q["ask_size"][0]) == (8629.2, 8629.3, 806.0, 5494.0)


def test_two_kraken_trade_files_of_one_instrument_merge_in_event_time() -> None:
    folder = SHARED_DATA / "trades/kraken/trades_csv"
    frames = read_paths([str(folder)])
    assert [f.instrument for f in frames] == ["kraken:BCH/EUR", "kraken:BCH/EUR"]
    plan = ReplayPlan.build(frames, 100)
    ts = [t for j in range(plan.n_slices) for s in plan.slice(j) if s.trades is not None
          for t in s.trades.ts_event.tolist()]
    assert len(ts) == 148 + 486 and ts == sorted(ts)


def test_bars_built_from_real_binance_trades_equal_the_recorded_candles() -> None:
    """XRP/ETH trades over 2.5 days rebuild Binance's own 1-minute candles, every field."""
    frames = read_paths([str(SHARED_DATA / "trades/binance/XRP_ETH-trades.feather")])
    plan = ReplayPlan.build(frames, 1000)
    validator, builder = MarketValidator(), BarBuilder("binance:XRP/ETH", 60 * 10**9)
    bars = []
    for j in range(plan.n_slices):
        for item in plan.slice(j):
            for out in validator.update(item):
                assert isinstance(out, MarketSlice), f"real trade quarantined: {out}"
                bars += [b for batch in builder.update(out) for b in batch.bars]
    bars += [b for batch in builder.flush() for b in batch.bars]
    candles = pl.read_ipc(SHARED_DATA / "ohlcv/binance/XRP_ETH-1m.feather")
    assert [b.ts_open for b in bars] == candles["date"].dt.epoch("ns").to_list()
    assert [(b.open, b.high, b.low, b.close) for b in bars] == list(
        candles.select("open", "high", "low", "close").iter_rows())
    assert [b.volume for b in bars] == pytest.approx(candles["volume"].to_list(), rel=1e-12)


@pytest.mark.parametrize("rel, reason", [
    ("universe/huobi-pob/cryptos_2017to2021_daily.parquet", "cannot tell the venue from the path; pass --venue"),
])
def test_files_that_cannot_be_replayed_stop_the_run_naming_the_file(rel: str, reason: str) -> None:
    with pytest.raises(DataSourceError, match=reason) as info:
        read_paths([str(SHARED_DATA / rel)])
    assert rel.split("/")[-1] in str(info.value)


def test_funding_rates_alone_stop_the_run_asking_for_the_contracts_bars() -> None:
    from sources.replay_plan import ReplayPlan

    with pytest.raises(DataSourceError, match="funding rates of 'binance:XRP/USDT:USDT' need the contract's bars"):
        ReplayPlan.open([str(SHARED_DATA / "futures/binance/XRP_USDT_USDT-8h-funding_rate.feather")], 100)


def test_a_file_with_any_name_is_read_by_its_columns_and_its_bar_length_inferred(tmp_path: Path) -> None:
    for name, rel, tf in (("xrp.feather", "ohlcv/binance/XRP_ETH-5m.feather", 300),
                          ("futures.feather", "futures/binance/XRP_USDT_USDT-1h-futures.feather", 3600),
                          ("t.feather", "trades/binance/XRP_ETH-trades.feather", 0)):
        dst = tmp_path / name
        dst.write_bytes((SHARED_DATA / rel).read_bytes())
        [frame] = read_paths([str(dst)], venue="binance", symbol="XRP/ETH")
        [named] = read_paths([str(SHARED_DATA / rel)], symbol="XRP/ETH")
        assert frame.timeframe_ns == tf * 10**9 == named.timeframe_ns
        assert frame.frame.equals(named.frame)


def test_known_venues_are_exactly_ccxt_exchanges_and_the_past_ones() -> None:
    import ccxt

    from sources.formats import _PAST_VENUES, known_venues

    assert known_venues() == frozenset(ccxt.exchanges) | _PAST_VENUES


def test_every_real_layout_tells_its_documented_time_unit_from_the_magnitude() -> None:
    cases = {"cross_venue/kraken/XBTUSD_5.csv.gz": "s", "ohlcv/binance/ADABTC-1m-2021-11-27.csv": "ms",
             "ticks/tardis/bitmex_trades_XBTUSD.csv": "us", "trades/kraken/trades_csv/BCHEUR.csv": "s",
             "cross_venue/binanceus/BTCUSD_1m_20230301_20230321.csv.gz": "iso",
             "ohlcv/bittrex/ETH_BTC-5m.feather": "datetime"}
    for rel, unit in cases.items():
        [frame] = read_paths([str(SHARED_DATA / rel)])
        assert frame.ts_unit == unit, rel


def test_real_data_passes_the_plausibility_and_jump_rules_untouched() -> None:
    for rel in ("cross_venue/kraken/XBTUSD_5.csv.gz", "ticks/tardis/bitmex_trades_XBTUSD.csv",
                "ohlcv/binance/XRP_ETH-1m.feather", "trades/binance/XRP_ETH-trades.feather"):
        frames = read_paths([str(SHARED_DATA / rel)])
        assert all(f.frame["problem"].null_count() == f.frame.height for f in frames), rel
        plan = ReplayPlan.build(frames, 5000)
        validators = {i: MarketValidator() for i in plan.universe}
        for j in range(plan.n_slices):
            for item in plan.slice(j):
                assert all(isinstance(o, MarketSlice) for o in validators[item.instrument].update(item)), rel
