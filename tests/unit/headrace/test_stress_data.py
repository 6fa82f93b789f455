"""Historical shock files: the shipped files load; May 2021's BTC shock and the USDC de-peg's currency shock equal
the figures computed here straight from the shared data; a rebuild gives the shipped files; bad rows are refused
with the file and line."""

from __future__ import annotations

import csv
import gzip
import statistics
from datetime import datetime
from pathlib import Path

import pytest

from headrace.stress_data import STRESS_DIR, load_scenario_file, main
from helpers import HOURLY, SHARED_DATA

SHIPPED = ("may_2021_selloff", "covid_2020", "usdc_depeg_2023")
BINANCEUS = SHARED_DATA / "cross_venue" / "binanceus"


def needs(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"needs the shared data: {path} is missing")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_load(name: str) -> None:
    shocks, currency = load_scenario_file(STRESS_DIR / f"{name}.csv")
    assert shocks or currency
    assert all(-1.0 <= s < 1.0 for _, s in (*shocks, *currency))
    text = (STRESS_DIR / f"{name}.csv").read_text()
    assert "# source: ../shared/data/" in text
    assert "# window: " in text or "# worst minute: " in text


def test_may_2021_btc_is_the_parquet_return_and_default_is_the_median() -> None:
    needs(HOURLY)
    import polars as pl

    df = pl.read_parquet(HOURLY)
    close = {t: df.filter(pl.col("Date") == t)["BTC"].item()
             for t in (datetime(2021, 5, 12, 0), datetime(2021, 5, 19, 12))}
    direct = close[datetime(2021, 5, 19, 12)] / close[datetime(2021, 5, 12, 0)] - 1
    shocks = dict(load_scenario_file(STRESS_DIR / "may_2021_selloff.csv")[0])
    assert shocks["BTC"] == pytest.approx(direct, rel=1e-15)
    assert -0.5 < shocks["BTC"] < -0.3  # BTC fell about 39 % in that week
    assets = {a: s for a, s in shocks.items() if a != "*"}
    assert len(assets) == 82
    assert shocks["*"] == statistics.median(assets.values())


def closes(pair: str) -> dict[str, tuple[float, float]]:
    """open_time -> (close, volume) of a Binance.US 1-minute file, read with the csv module."""
    with gzip.open(BINANCEUS / f"{pair}_1m_20230301_20230321.csv.gz", "rt") as f:
        return {r["open_time"]: (float(r["close"]), float(r["volume"])) for r in csv.DictReader(f)}


def test_usdc_shock_is_negative_and_the_worst_minute_of_11_march() -> None:
    needs(BINANCEUS)
    usd, usdc = closes("BTCUSD"), closes("BTCUSDC")
    usdc_usd = {t: usd[t][0] / usdc[t][0] for t in usd
                if t.startswith("2023-03-11") and usd[t][1] > 0 and usdc[t][1] > 0}
    low = min(usdc_usd, key=lambda t: usdc_usd[t])
    shocks, currency = load_scenario_file(STRESS_DIR / "usdc_depeg_2023.csv")
    c = dict(currency)
    assert c["USDC"] < -0.1
    assert c["USDC"] == pytest.approx(usdc_usd[low] - 1, rel=1e-12)
    assert dict(shocks)["BTC"] == pytest.approx(usd[low][0] / usd["2023-03-10 00:00:00+00:00"][0] - 1, rel=1e-12)
    assert "*" not in dict(shocks)


def test_rebuild_gives_the_shipped_files(tmp_path: Path) -> None:
    needs(SHARED_DATA / "universe")
    needs(BINANCEUS)
    assert main(["--shared", str(SHARED_DATA), "--out", str(tmp_path)]) == 0
    for name in SHIPPED:
        assert (tmp_path / f"{name}.csv").read_text() == (STRESS_DIR / f"{name}.csv").read_text()


@pytest.mark.parametrize(("body", "message"), [
    ("asset,BTC,-0.3\n", r":1: expected the header 'kind,name,shock'"),
    ("# c\nkind,name,shock\nasset,BTC,-0.3\nbond,X,0.1\n", r":4: kind must be 'asset' or 'currency', got 'bond'"),
    ("kind,name,shock\nasset,BTC,abc\n", r":2: shock 'abc' is not a number"),
    ("kind,name,shock\nasset,BTC,-1.5\n", r":2: shock -1.5 must be a finite return >= -1"),
    ("kind,name,shock\nasset,BTC,nan\n", r":2: shock nan must be a finite"),
    ("kind,name,shock\nasset,BTC,-0.3\nasset,BTC,-0.2\n", r":3: asset 'BTC' listed twice"),
    ("kind,name,shock\nasset,,-0.3\n", r":2: empty name"),
    ("kind,name,shock\ncurrency,*,-0.3\n", r":2: '\*' is only for assets"),
    ("kind,name,shock\nasset,BTC\n", r":2: expected 3 fields"),
    ("# only a comment\n", r"bad.csv: no 'kind,name,shock' header"),
    ("kind,name,shock\n", r"bad.csv: no shocks"),
])
def test_bad_rows_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=message) as err:
        load_scenario_file(path)
    assert str(path) in str(err.value)
