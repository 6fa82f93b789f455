"""Wide price tables (one time column, one close-price column per asset) read as close-only bars."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from headrace.errors import DataSourceError
from headrace.events import Quarantined
from helpers import SHARED_DATA, run_flow, small_config
from sources import formats
from sources.formats import ReadOptions, identify, read_file, wide_specs
from sources.replay_plan import ReplayPlan

HOURLY = SHARED_DATA / "universe/huobi-pob/cryptos_2017to2021_hourly.parquet"
DAILY = SHARED_DATA / "universe/huobi-pob/cryptos_2017to2021_daily.parquet"
USDT = ReadOptions(quote="USDT")

pytestmark = pytest.mark.skipif(not DAILY.exists() or not HOURLY.exists(),
                                reason="../shared/data/universe/huobi-pob is missing")


def _frames(path: Path) -> dict[str, pl.DataFrame]:
    return {f.instrument: f.frame for f in read_file(identify(str(path), venue="huobi"), USDT)}


def test_the_hourly_table_reads_into_82_instruments_one_bar_per_price() -> None:
    table = pl.read_parquet(HOURLY)
    frames = _frames(HOURLY)
    assert len(frames) == 82 == table.width - 1
    assert sorted(frames) == sorted(f"huobi:{c}/USDT" for c in table.columns[1:])
    for c in table.columns[1:]:
        f = frames[f"huobi:{c}/USDT"]
        assert f.height == table[c].count()
        assert f["problem"].null_count() == f.height
    btc = frames["huobi:BTC/USDT"]
    assert btc["ts_open"].to_list() == table["Date"].dt.epoch("ns").to_list()
    assert (btc["ts_event"] - btc["ts_open"]).unique().to_list() == [3600 * 10**9]  # one hour, from the spacing


def test_the_daily_table_lists_each_asset_from_its_first_price_with_the_files_values() -> None:
    table = pl.read_parquet(DAILY)
    frames = _frames(DAILY)
    assert len(frames) == 9
    starts = set()
    for c in table.columns[1:]:
        listed = table.select("Date", c).filter(pl.col(c).is_not_null())
        f = frames[f"huobi:{c}/USDT"]
        assert f["ts_open"][0] == listed["Date"].cast(pl.Datetime("ns")).dt.epoch("ns")[0]
        assert f["ts_open"].to_list() == listed["Date"].cast(pl.Datetime("ns")).dt.epoch("ns").to_list()
        for col in ("open", "high", "low", "close"):
            assert f[col].to_list() == listed[c].to_list()
        assert f["volume"].to_list() == [0.0] * f.height
        assert f["row"].to_list() == table.with_row_index().filter(pl.col(c).is_not_null())["index"].to_list()
        assert (f["ts_event"] - f["ts_open"]).unique().to_list() == [86_400 * 10**9]
        starts.add(f["ts_open"][0])
    assert len(starts) > 1  # assets were listed at different dates: BSV joins in November 2018
    assert frames["huobi:BSV/USDT"]["ts_open"][0] == formats.date_ns("2018-11-30")


def test_without_a_quote_the_error_is_one_line_naming_quote() -> None:
    spec = identify(str(DAILY), venue="huobi")
    with pytest.raises(DataSourceError, match=r"pass --quote <QUOTE> \(config: replay.quote\)") as info:
        wide_specs(spec, ReadOptions())
    assert "\n" not in str(info.value) and DAILY.name in str(info.value)
    with pytest.raises(DataSourceError, match="pass --venue"):
        identify(str(DAILY))


def test_the_lazy_plan_reads_one_input_per_column_and_resumes_in_bars() -> None:
    plan = ReplayPlan.open([str(DAILY)], 500, venue="huobi", options=USDT, batch_rows=100)
    table = pl.read_parquet(DAILY)
    assert plan.universe == tuple(sorted(f"huobi:{c}/USDT" for c in table.columns[1:]))
    assert plan.total_rows == sum(table[c].count() for c in table.columns[1:])
    assert set(plan.timeframes.values()) == {86_400 * 10**9}
    cur = plan.cursor()
    first = [cur.next_slice() for _ in range(3)]
    state = cur.state()
    rest = []
    while (got := cur.next_slice()) is not None:
        rest.append(got)
    again = plan.cursor(state)
    resumed = []
    while (got := again.next_slice()) is not None:
        resumed.append(got)
    assert [g[1] for g in resumed] == [g[1] for g in rest] and len(first) == 3
    assert [[s.instrument for s in g[0]] for g in resumed] == [[s.instrument for s in g[0]] for g in rest]


def test_data_list_shows_one_row_per_asset_and_names_quote_when_missing() -> None:
    from headrace.cli import app

    runner = CliRunner()
    got = runner.invoke(app, ["data", "list", str(DAILY), "--venue", "huobi", "--quote", "USDT", "--json"])
    assert got.exit_code == 0, got.output
    rows = json.loads(got.stdout)
    assert [r["symbol"] for r in rows] == [f"{c}/USDT" for c in pl.read_parquet_schema(DAILY) if c != "Date"]
    assert {(r["timeframe"], r["quarantined"], r["error"]) for r in rows} == {("1d", 0, None)}
    assert next(r for r in rows if r["symbol"] == "BSV/USDT")["first"] == "2018-11-30T00:00:00Z"
    missing = runner.invoke(app, ["data", "list", str(DAILY), "--venue", "huobi", "--json"])
    assert missing.exit_code == 1
    assert "pass --quote <QUOTE> (config: replay.quote)" in json.loads(missing.stdout)[0]["error"]


def test_a_replay_of_the_daily_table_trades_and_quarantines_nothing() -> None:
    config = small_config('replay.venue="huobi"', 'replay.quote="USDT"')
    plan = ReplayPlan.open([str(DAILY)], config.replay.chunk_rows, venue=config.replay.venue,
                           options=ReadOptions.from_config(config))
    rows = run_flow(plan, config)
    assert not [r for r in rows if isinstance(r, Quarantined)]
    bars = [r for r in rows if type(r).__name__ == "Bar"]
    assert len(bars) == plan.total_rows
    assert any(type(r).__name__ == "Fill" for r in rows)
