"""sources/select.py: time ranges, bar-length selection and the data listing, on the repo's demo data."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from headrace.config import load_config
from headrace.errors import DataSourceError
from sources import formats
from sources.select import TimeRange, describe, identify_all, of_timeframe, open_plan, timeframe_text

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "data" / "demo" / "bittrex"
DAY = 86_400 * 10**9
JAN5 = 1_515_110_400 * 10**9  # 2018-01-05T00:00:00Z


@pytest.mark.parametrize("text, start, end", [
    ("2018-01-05:2018-01-06", JAN5, JAN5 + DAY),
    ("2018-01-05:", JAN5, None),
    (":2018-01-05", None, JAN5),
    ("2018-01-05T12:30:2018-01-06T00:00:00", JAN5 + 45_000 * 10**9, JAN5 + DAY),
    ("2018-01-05T12:00:00Z:", JAN5 + DAY // 2, None),
    ("2018-01-05T02:00:00+02:00:2018-01-06", JAN5, JAN5 + DAY),
])
def test_timerange_parses_dates_and_datetimes_either_side_open(text: str, start: int | None, end: int | None) -> None:
    assert TimeRange.parse(text) == TimeRange(start, end)


@pytest.mark.parametrize("text", ["2018-01-05", "2018-01-06:2018-01-05", "yesterday:today", "05/01/2018:",
                                  "2018-01-05:2018-01-05"])
def test_a_bad_timerange_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(DataSourceError, match="--timerange"):
        TimeRange.parse(text)


def test_keep_takes_bars_opening_inside_the_range_and_rows_without_a_time() -> None:
    [frame] = formats.read_file(formats.identify(str(DEMO / "ETH_BTC-5m.feather")))
    tr = TimeRange.parse("2018-01-15:2018-01-16")
    kept = tr.keep(frame).frame
    ts = kept["ts_open"].drop_nulls()
    jan15 = JAN5 + 10 * DAY
    assert kept.height == 288 and ts.min() == jan15 and ts.max() == jan15 + DAY - 300 * 10**9
    with_null = frame.frame.head(3).with_columns(pl.lit(None, dtype=pl.Int64).alias("ts_open"))
    nulls = type(frame)(instrument=frame.instrument, kind=frame.kind, timeframe_ns=frame.timeframe_ns,
                        path=frame.path, frame=with_null, ts_unit=frame.ts_unit)
    assert tr.keep(nulls).frame.height == 3  # the validator still sees (and quarantines) them


def test_of_timeframe_keeps_bar_files_of_that_length_only(tmp_path: Path) -> None:
    src = pl.read_ipc(DEMO / "ETH_BTC-5m.feather")
    (tmp_path / "bittrex").mkdir()
    src.write_ipc(tmp_path / "bittrex" / "ETH_BTC-5m.feather")
    hourly = src.filter(pl.col("date").dt.minute() == 0)
    hourly.write_ipc(tmp_path / "bittrex" / "ETH_BTC-1h.feather")
    hourly.write_ipc(tmp_path / "bittrex" / "hourly.feather")  # no length in the name: told from the data
    specs = identify_all([str(tmp_path)], symbol="ETH/BTC")
    options = formats.ReadOptions()
    assert [Path(s.path).name for s in of_timeframe(specs, "5m", options)] == ["ETH_BTC-5m.feather"]
    assert sorted(Path(s.path).name for s in of_timeframe(specs, "1h", options)) == ["ETH_BTC-1h.feather",
                                                                                      "hourly.feather"]
    with pytest.raises(DataSourceError, match=r"'bittrex:ETH/BTC' is recorded at 5m, 1h, not 1m"):
        of_timeframe(specs, "1m", options)
    # an instrument recorded at one length keeps it: clocks may differ between instruments
    (tmp_path / "mixed" / "bittrex").mkdir(parents=True)
    src.write_ipc(tmp_path / "mixed" / "bittrex" / "LTC_BTC-5m.feather")
    hourly.write_ipc(tmp_path / "mixed" / "bittrex" / "ETH_BTC-1h.feather")
    src.write_ipc(tmp_path / "mixed" / "bittrex" / "ETH_BTC-5m.feather")
    specs = identify_all([str(tmp_path / "mixed")])
    assert sorted(Path(s.path).name for s in of_timeframe(specs, "1h", options)) == [
        "ETH_BTC-1h.feather", "LTC_BTC-5m.feather"]


def test_open_plan_with_a_timerange_replays_only_those_rows() -> None:
    config = load_config(None)
    plan = open_plan([str(DEMO / "ETH_BTC-5m.feather"), str(DEMO / "LTC_BTC-5m.feather")], config,
                     timerange="2018-01-15:2018-01-16")
    assert plan.total_rows == 2 * 288
    full = open_plan([str(DEMO / "ETH_BTC-5m.feather")], config)
    assert full.total_rows > 288
    with pytest.raises(DataSourceError, match="no rows in the time range"):
        open_plan([str(DEMO / "ETH_BTC-5m.feather")], config, timerange="2030-01-01:")


def test_describe_lists_every_file_with_its_reading_and_errors_per_file(tmp_path: Path) -> None:
    (tmp_path / "bittrex").mkdir()
    pl.read_ipc(DEMO / "ETH_BTC-5m.feather").write_ipc(tmp_path / "bittrex" / "ETH_BTC-5m.feather")
    (tmp_path / "bittrex" / "BTC_USDT-book.csv").write_text("a,b\n1,2\n")
    rows = describe([str(tmp_path)])
    by = {Path(str(r["path"])).name: r for r in rows}
    eth = by["ETH_BTC-5m.feather"]
    assert (eth["instrument"], eth["kind"], eth["timeframe"], eth["quarantined"], eth["error"]) == (
        "bittrex:ETH/BTC", "bar", "5m", 0, None)
    assert eth["rows"] == pl.read_ipc(DEMO / "ETH_BTC-5m.feather").height
    assert str(eth["first"]).startswith("2018-") and str(eth["first"]) < str(eth["last"])
    assert "order-book" in str(by["BTC_USDT-book.csv"]["error"])


def test_timeframe_text() -> None:
    assert [timeframe_text(n * 10**9) for n in (30, 60, 300, 3600, 86_400)] == ["30s", "1m", "5m", "1h", "1d"]
