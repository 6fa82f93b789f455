"""The repo's own demo data (freqtrade Feather bars from Bittrex) parses into the normalised schema, checked
against the raw file; these need nothing beside the repository."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from headrace.errors import DataSourceError
from helpers import ROOT
from sources.formats import identify, read_paths

DEMO = ROOT / "data" / "demo" / "bittrex"


def test_freqtrade_feather_bars_keep_values_and_open_times() -> None:
    path = DEMO / "ETH_BTC-5m.feather"
    raw = pl.read_ipc(path)
    [frame] = read_paths([str(path)])
    got = frame.frame
    assert got["problem"].null_count() == got.height, "real data should parse cleanly"
    assert identify(str(path)).venue == "bittrex" and identify(str(path)).symbol == "ETH/BTC"
    assert frame.instrument == "bittrex:ETH/BTC" and frame.timeframe_ns == 300 * 10**9
    assert got["ts_open"].to_list() == raw["date"].dt.epoch("ns").to_list()
    assert (got["ts_event"] - got["ts_open"]).unique().to_list() == [300 * 10**9]
    for c in ("open", "high", "low", "close", "volume"):
        assert got[c].to_list() == raw[c].to_list()


def test_every_demo_file_is_read_whole_and_clean() -> None:
    frames = read_paths([str(DEMO)])
    assert len(frames) == 10 and all(f.instrument.startswith("bittrex:") and f.instrument.endswith("/BTC")
                                     for f in frames)
    assert sum(f.frame.height for f in frames) == 57546  # as data/demo/SOURCES.md says
    assert all(f.frame["problem"].null_count() == f.frame.height for f in frames)


def test_a_file_outside_any_venue_folder_needs_the_venue(tmp_path: Path) -> None:
    dst = tmp_path / "ETH_BTC-5m.feather"
    dst.write_bytes((DEMO / "ETH_BTC-5m.feather").read_bytes())
    with pytest.raises(DataSourceError, match="cannot tell the venue") as info:
        read_paths([str(dst)])
    assert "ETH_BTC-5m.feather" in str(info.value) and "replay.venue" in str(info.value)
    [frame] = read_paths([str(dst)], venue="bittrex")
    assert frame.instrument == "bittrex:ETH/BTC"
