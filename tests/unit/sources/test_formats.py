"""Reading files: batches, time units, date formats, the plausibility window, broken files and values."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from headrace.errors import DataSourceError
from sources.formats import FileSpec, ReadOptions, identify, iter_file, read_file, read_paths

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "data" / "demo" / "bittrex"


def spec_of(path: Path) -> FileSpec:
    return identify(str(path))


@pytest.mark.parametrize("batch_rows", [997, 5760, 10_000])
def test_iter_file_batches_concatenate_to_read_file_with_absolute_rows(batch_rows: int) -> None:
    spec = spec_of(DEMO / "ETH_BTC-5m.feather")
    [whole] = read_file(spec)
    parts = list(iter_file(spec, batch_rows=batch_rows))
    assert all(p.frame.height <= batch_rows for p in parts)
    assert pl.concat([p.frame for p in parts]).equals(whole.frame)
    assert {(p.instrument, p.kind, p.timeframe_ns, p.ts_unit) for p in parts} == {
        (whole.instrument, whole.kind, whole.timeframe_ns, whole.ts_unit)}


def test_iter_file_from_a_start_row_gives_the_tail_with_its_file_rows(tmp_path: Path) -> None:
    src = pl.read_ipc(DEMO / "ADA_BTC-5m.feather")
    for name, write in (("ADA_BTC-5m.parquet", lambda p: src.write_parquet(p, row_group_size=1000)),
                        ("ADA_BTC-5m.csv", lambda p: src.with_columns(pl.col("date").dt.epoch("ms")).write_csv(p))):
        path = tmp_path / "bittrex" / name
        path.parent.mkdir(exist_ok=True)
        write(path)
        spec = spec_of(path)
        [whole] = read_file(spec)
        got = pl.concat([p.frame for p in iter_file(spec, batch_rows=999, start_row=2500)])
        assert got["row"][0] == 2500
        assert got.equals(whole.frame.slice(2500)), name
        assert list(iter_file(spec, start_row=whole.frame.height)) == []


# --------------------------------------------------------------------------------------------------
# integer epoch times in any unit (told from the magnitude), and the plausibility window

NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def demo_bars(n: int = 300) -> pl.DataFrame:
    return pl.read_ipc(DEMO / "ETH_BTC-5m.feather").head(n)


def write(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    {".csv": df.write_csv, ".parquet": df.write_parquet, ".feather": df.write_ipc}[path.suffix](path)
    return path


def epochs(unit: str, n: int = 300) -> pl.DataFrame:
    src = demo_bars(n)
    return src.with_columns((pl.col("date").dt.epoch("ns") // NS[unit]).alias("timestamp")).drop("date")


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_integer_epochs_in_any_unit_read_as_the_same_times(tmp_path: Path, unit: str, suffix: str) -> None:
    path = write(epochs(unit), tmp_path / "bittrex" / f"ETH_BTC-5m{suffix}")
    [frame] = read_paths([str(path)])
    expected = demo_bars()["date"].dt.epoch("ns")
    assert frame.ts_unit == unit
    assert frame.frame["problem"].null_count() == 300
    assert frame.frame["ts_open"].to_list() == expected.to_list()


def test_integer_seconds_in_a_parquet_date_column_are_not_1970(tmp_path: Path) -> None:
    src = demo_bars().with_columns(pl.col("date").dt.epoch("s"))
    [frame] = read_paths([str(write(src, tmp_path / "bittrex" / "ETH_BTC-5m.parquet"))])
    assert frame.ts_unit == "s"
    assert frame.frame["ts_open"][0] == demo_bars()["date"].dt.epoch("ns")[0]  # January 2018


def test_a_file_without_a_bar_length_in_its_name_infers_it_from_epochs_in_seconds(tmp_path: Path) -> None:
    path = write(epochs("s"), tmp_path / "bittrex" / "ethbtc.csv")
    [frame] = read_paths([str(path)], symbol="ETH/BTC")
    assert frame.timeframe_ns == 300 * 10**9 and frame.ts_unit == "s"


def test_timestamp_unit_from_the_config_overrides_the_magnitude(tmp_path: Path) -> None:
    path = write(epochs("s"), tmp_path / "bittrex" / "ETH_BTC-5m.csv")
    [frame] = read_paths([str(path)], options=ReadOptions(timestamp_unit="ms"))
    assert frame.ts_unit == "ms"
    assert frame.frame["problem"].drop_nulls().str.starts_with("timestamp out of range").all()
    assert frame.frame["problem"].null_count() == 0  # 1.5e9 ms is January 1970: outside the window


def test_epochs_of_mixed_magnitudes_are_refused_in_one_line_naming_the_file(tmp_path: Path) -> None:
    df = epochs("ms").with_columns(pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.col("timestamp") // 1000)
                                   .otherwise(pl.col("timestamp")).alias("timestamp"))
    path = write(df, tmp_path / "bittrex" / "ETH_BTC-5m.csv")
    with pytest.raises(DataSourceError) as e:
        read_paths([str(path)])
    msg = str(e.value)
    assert str(path) in msg and "replay.timestamp_unit" in msg and "\n" not in msg and len(msg) < 400


def test_year_3000_in_milliseconds_in_parquet_is_quarantined_as_out_of_range(tmp_path: Path) -> None:
    y3000_ms = 32_503_680_000_000  # overflows int64 nanoseconds
    df = epochs("ms").with_columns(pl.when(pl.int_range(pl.len()) == 7).then(y3000_ms)
                                   .otherwise(pl.col("timestamp")).alias("timestamp"))
    [frame] = read_paths([str(write(df, tmp_path / "bittrex" / "ETH_BTC-5m.parquet"))])
    bad = frame.frame.filter(pl.col("problem").is_not_null())
    assert bad["row"].to_list() == [7]
    assert bad["problem"][0].startswith("timestamp out of range") and "validation.earliest" in bad["problem"][0]


def test_year_3000_as_iso_text_in_csv_is_quarantined_and_the_window_comes_from_the_options(tmp_path: Path) -> None:
    df = demo_bars().with_columns(pl.col("date").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("3000-01-01T00:00:00Z"))
                         .otherwise(pl.col("date")).alias("date"))
    path = write(df, tmp_path / "bittrex" / "ETH_BTC-5m.csv")
    [frame] = read_paths([str(path)])
    bad = frame.frame.filter(pl.col("problem").is_not_null())
    assert bad["row"].to_list() == [3] and bad["problem"][0].startswith("timestamp out of range")
    first = demo_bars()["date"].dt.epoch("ns")
    narrow = ReadOptions(earliest_ns=int(first[100]), latest_ns=int(first[199]))
    [frame] = read_paths([str(path)], options=narrow)
    ok = frame.frame.filter(pl.col("problem").is_null())
    assert ok["row"].to_list() == list(range(100, 200))


def test_read_options_from_the_config_take_the_keys() -> None:
    from headrace.config import load_config

    config = load_config(None, ['replay.timestamp_unit="us"', 'replay.date_format="%d/%m/%Y"',
                                'validation.earliest="2017-01-01"', 'validation.latest="2030-01-01T00:00:00Z"'])
    opts = ReadOptions.from_config(config)
    assert opts == ReadOptions("us", "%d/%m/%Y", 1_483_228_800 * 10**9, 1_893_456_000 * 10**9)


# --------------------------------------------------------------------------------------------------
# text times: ISO 8601, or replay.date_format; nothing is guessed


def test_iso_8601_variants_all_read_as_utc(tmp_path: Path) -> None:
    texts = ["2018-01-10 04:55", "2018-01-10T04:55:00", "2018-01-10T04:55:00Z", "2018-01-10T05:55:00+01:00",
             "2018-01-10T04:55:00.000000000Z", "2018-01-10 03:55:00-0100"]
    df = pl.DataFrame({"date": texts, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0})
    [frame] = read_paths([str(write(df, tmp_path / "bittrex" / "ETH_BTC-5m.csv"))])
    assert frame.ts_unit == "iso" and frame.frame["problem"].null_count() == len(texts)
    assert set(frame.frame["ts_open"].to_list()) == {1_515_560_100 * 10**9}


def test_a_day_first_date_is_quarantined_naming_the_date_format_key_not_read_as_october(tmp_path: Path) -> None:
    df = demo_bars().with_columns(pl.col("date").dt.strftime("%Y-%m-%d %H:%M"))
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("01/10/2018 04:55"))
                         .otherwise(pl.col("date")).alias("date"))
    [frame] = read_paths([str(write(df, tmp_path / "bittrex" / "ETH_BTC-5m.csv"))])
    bad = frame.frame.filter(pl.col("problem").is_not_null())
    assert bad["row"].to_list() == [2]
    assert "'01/10/2018 04:55'" in bad["problem"][0] and "replay.date_format" in bad["problem"][0]


def test_a_file_of_only_non_iso_dates_is_refused_unless_the_format_is_named(tmp_path: Path) -> None:
    df = demo_bars().with_columns(pl.col("date").dt.strftime("%d/%m/%Y %H:%M"))
    path = write(df, tmp_path / "bittrex" / "ETH_BTC-5m.csv")
    with pytest.raises(DataSourceError, match=r"replay\.date_format") as e:
        read_paths([str(path)])
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    [frame] = read_paths([str(path)], options=ReadOptions(date_format="%d/%m/%Y %H:%M"))
    assert frame.ts_unit == "date_format" and frame.frame["problem"].null_count() == 300
    assert frame.frame["ts_open"].to_list() == demo_bars()["date"].dt.epoch("ns").to_list()


# --------------------------------------------------------------------------------------------------
# implausible values, and open or close outside [low, high], quarantined at parse time


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("close", 1e308, "implausible close: 1e+308"), ("low", 5e-324, "implausible low"),
    ("volume", 1e300, "implausible volume"), ("volume", 5e-324, "implausible volume"),
    ("open", 1.0, "open outside [low, high]"), ("close", 1e-9, "close outside [low, high]"),
])
def test_implausible_bar_values_are_quarantined_with_the_reason(tmp_path: Path, column: str, value: float,
                                                                 reason: str) -> None:
    df = demo_bars().with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit(value))
                                  .otherwise(pl.col(column)).alias(column))
    [frame] = read_paths([str(write(df, tmp_path / "bittrex" / "ETH_BTC-5m.feather"))])
    bad = frame.frame.filter(pl.col("problem").is_not_null())
    assert bad["row"].to_list() == [5] and bad["problem"][0].startswith(reason), bad["problem"][0]


# --------------------------------------------------------------------------------------------------
# broken files: one line naming the file; one broken CSV row spoils only that row


def test_a_feather_file_with_flipped_bytes_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = bytearray((DEMO / "ETH_BTC-5m.feather").read_bytes())
    outcomes = set()
    for k in range(0, len(data), max(1, len(data) // 40)):  # flip one byte at 40 places in turn
        b = bytearray(data)
        b[k] ^= 0xFF
        path = tmp_path / "bittrex" / "ETH_BTC-5m.feather"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(b))
        try:
            read_paths([str(path)])
            outcomes.add("read")
        except DataSourceError as e:
            assert str(path) in str(e) and "\n" not in str(e) and len(str(e)) < 400
            outcomes.add("error")
    assert "error" in outcomes  # the header and footer are checked


def test_a_truncated_parquet_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(demo_bars(), tmp_path / "bittrex" / "ETH_BTC-5m.parquet")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataSourceError) as e:
        read_paths([str(path)])
    assert str(path) in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400


def test_a_stray_quote_spoils_one_row_only_and_reasons_are_short(tmp_path: Path) -> None:
    path = write(epochs("ms", 5000), tmp_path / "bittrex" / "ETH_BTC-5m.csv")
    lines = path.read_text().splitlines()
    fields = lines[11].split(",")
    fields[0] = fields[0][:3] + '"' + fields[0][3:]  # data row 10: open 0.0"1234
    lines[11] = ",".join(fields)
    lines[20] = lines[20].replace(",", ',"', 1)  # data row 19: a field that opens a quote and never closes it
    path.write_text("\n".join(lines) + "\n")
    [frame] = read_paths([str(path)])
    assert frame.frame.height == 5000
    bad = frame.frame.filter(pl.col("problem").is_not_null())
    assert bad["row"].to_list() == [10] and bad["problem"][0].startswith("unparseable field 'open'")
    assert all(len(p) < 300 for p in bad["problem"].to_list() + bad["raw"].to_list())


def test_a_huge_field_is_echoed_truncated(tmp_path: Path) -> None:
    path = write(epochs("ms", 50), tmp_path / "bittrex" / "ETH_BTC-5m.csv")
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[0] = "x" * 100_000
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    [frame] = read_paths([str(path)])
    [problem] = frame.frame["problem"].drop_nulls().to_list()
    assert problem.startswith("unparseable field 'open'") and len(problem) < 300


def test_csv_streams_by_lines_gzip_too_and_blank_lines_are_no_rows(tmp_path: Path) -> None:
    import gzip

    text = epochs("s", 2500).write_csv()
    lines = text.splitlines()
    lines.insert(700, "")  # a blank line is not a record
    path = tmp_path / "bittrex" / "ETH_BTC-5m.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    spec = spec_of(path)
    [whole] = read_file(spec)
    assert whole.frame.height == 2500 and whole.frame["problem"].null_count() == 2500
    assert whole.frame["ts_open"].to_list() == demo_bars(2500)["date"].dt.epoch("ns").to_list()
    parts = list(iter_file(spec, batch_rows=600, start_row=650))
    assert [p.frame.height for p in parts] == [600, 600, 600, 50]
    assert pl.concat([p.frame for p in parts]).equals(whole.frame.slice(650))


def test_a_csv_with_a_header_and_no_rows_reads_as_no_rows_and_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bittrex" / "ETH_BTC-5m.csv"
    path.parent.mkdir(parents=True)
    path.write_text("timestamp,open,high,low,close,volume\n")
    [frame] = read_paths([str(path)])
    assert frame.frame.height == 0 and list(iter_file(spec_of(path))) == []
    path.write_text("")
    with pytest.raises(DataSourceError, match="are missing"):
        read_paths([str(path)])
