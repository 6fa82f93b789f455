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
