"""Historical stress shocks from the real market data we hold: build the files in ``data/stress/``, and load them.

A shock file is a CSV with ``#`` comment lines (what the shock is, its window, source file and derivation), then
the header ``kind,name,shock`` and one row per shock: ``asset,BTC,-0.39`` (the asset's simple return over the
window), ``asset,*,-0.45`` (the default for assets the file does not list) or ``currency,USDC,-0.125`` (the
currency's move against the account currency). `load_scenario_file` turns one into the ``shocks`` and
``currency_shocks`` of an ``operators.risk.stress.Scenario``.

The shipped files and how each is derived (windows fixed here, chosen from the data; UTC):

- ``may_2021_selloff.csv``: the May 2021 sell-off in the 82-asset hourly universe
  (``universe/huobi-pob/cryptos_2017to2021_hourly.parquet``, USDT closes): per asset close(2021-05-19 12:00) /
  close(2021-05-12 00:00) - 1, from the last hour before the sell-off began (Tesla's 12 May BTC announcement)
  to the hour of the 19 May crash low of the universe's median asset; ``*`` = the median of the 82 shocks.
- ``covid_2020.csv``: the March 2020 COVID crash in the 9-asset daily universe
  (``universe/huobi-pob/cryptos_2017to2021_daily.parquet``, USDT closes): per asset close(2020-03-12) /
  close(2020-03-06) - 1, from the last high before the crash to the lowest daily close of the median asset;
  ``*`` = the median.
- ``usdc_depeg_2023.csv``: the USDC de-peg of March 2023 in the Binance.US 1-minute bars
  (``cross_venue/binanceus/BTCUSD|BTCUSDC|BTCUSDT_1m_20230301_20230321.csv.gz``). USDC's USD price is
  close(BTC/USD) / close(BTC/USDC) (USD per BTC over USDC per BTC); the worst point is the minute of 11 March 2023
  with the lowest such price among the minutes where both pairs traded (volume > 0, so no stale price). USDC's
  shock is that price - 1 (its move from the 1-dollar peg), USDT's the same ratio through BTC/USDT at that minute
  (when BTC/USDT traded then), and BTC's shock is its own USD move from the 2023-03-10 00:00 bar (before Silicon
  Valley Bank's failure) to the worst minute. No ``*``: the file says nothing about other assets.

``python -m headrace.stress_data [--shared DIR] [--out DIR]`` rebuilds the files.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from headrace.config import Config
from headrace.errors import ConfigError
from operators.risk.stress import Scenario

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
STRESS_DIR = ROOT / "data" / "stress"

HOURLY = Path("universe/huobi-pob/cryptos_2017to2021_hourly.parquet")
DAILY = Path("universe/huobi-pob/cryptos_2017to2021_daily.parquet")
BINANCEUS = Path("cross_venue/binanceus")

MAY_2021 = (datetime(2021, 5, 12, 0), datetime(2021, 5, 19, 12))
COVID_2020 = (date(2020, 3, 6), date(2020, 3, 12))
DEPEG_START = "2023-03-10 00:00:00+00:00"
DEPEG_DAY = "2023-03-11"

Shocks = tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class ShockFile:
    """One historical scenario's shocks and the comment lines that say where they come from."""

    name: str
    comments: tuple[str, ...]
    shocks: Shocks  # per base asset, "*" = the default
    currency_shocks: Shocks = ()


def window_returns(path: Path, start: datetime | date, end: datetime | date) -> dict[str, float]:
    """Per asset of a wide price table (a ``Date`` column, one close per asset) close(end) / close(start) - 1;
    assets without a price at either end are left out. Raises ValueError when either row is missing."""
    import polars as pl

    df = pl.read_parquet(path)
    rows = {}
    for label, when in (("start", start), ("end", end)):
        hit = df.filter(pl.col("Date") == pl.lit(when))
        if hit.height != 1:
            raise ValueError(f"{path}: {hit.height} rows at the {label} {when}, expected 1")
        rows[label] = hit.row(0, named=True)
    out = {}
    for asset in df.columns:
        if asset == "Date":
            continue
        a, b = rows["start"][asset], rows["end"][asset]
        if a is not None and b is not None and a > 0:
            out[asset] = b / a - 1.0
    return out


def _with_median(returns: dict[str, float]) -> Shocks:
    return (*sorted(returns.items()), ("*", statistics.median(returns.values())))


def build_may_2021(shared: Path = SHARED_DATA) -> ShockFile:
    """The May 2021 sell-off: per asset of the hourly universe its return over `MAY_2021`; "*" = the median."""
    start, end = MAY_2021
    returns = window_returns(shared / HOURLY, start, end)
    return ShockFile("may_2021_selloff", (
        "May 2021 crypto sell-off: per asset the simple return close(end) / close(start) - 1 (USDT closes)",
        f"window: {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC (hourly bars); '*' = median of {len(returns)}",
        f"source: ../shared/data/{HOURLY} (dppalomar/pob, Huobi hourly closes, GPL-3)",
    ), _with_median(returns))


def build_covid_2020(shared: Path = SHARED_DATA) -> ShockFile:
    """The March 2020 COVID crash: per asset of the daily universe its return over `COVID_2020`; "*" = median."""
    start, end = COVID_2020
    returns = window_returns(shared / DAILY, start, end)
    return ShockFile("covid_2020", (
        "March 2020 COVID crash: per asset the simple return close(end) / close(start) - 1 (USDT daily closes)",
        f"window: {start} .. {end} (daily closes); '*' = median of {len(returns)}",
        f"source: ../shared/data/{DAILY} (dppalomar/pob, Huobi daily closes, GPL-3)",
    ), _with_median(returns))


@dataclass(frozen=True, slots=True)
class Depeg:
    """The worst minute of the USDC de-peg and the prices that define it."""

    minute: str
    usdc_usd: float  # close(BTC/USD) / close(BTC/USDC) at the worst minute
    usdt_usd: float | None  # close(BTC/USD) / close(BTC/USDT) then, None when BTC/USDT did not trade
    btc_start: float  # close(BTC/USD) at DEPEG_START
    btc_worst: float  # close(BTC/USD) at the worst minute


def usdc_depeg(shared: Path = SHARED_DATA) -> Depeg:
    """Find the worst minute of 11 March 2023 for USDC/USD in the Binance.US 1-minute bars (both pairs traded)."""
    import polars as pl

    def bars(pair: str) -> pl.DataFrame:
        path = shared / BINANCEUS / f"{pair}_1m_20230301_20230321.csv.gz"
        return pl.read_csv(path).select("open_time", pl.col("close").alias(pair), pl.col("volume").alias(f"v{pair}"))

    d = bars("BTCUSD").join(bars("BTCUSDC"), on="open_time").join(bars("BTCUSDT"), on="open_time")
    start = d.filter(pl.col("open_time") == DEPEG_START)
    if start.height != 1:
        raise ValueError(f"{shared / BINANCEUS}: no BTCUSD bar at {DEPEG_START}")
    day = d.filter(pl.col("open_time").str.starts_with(DEPEG_DAY) & (pl.col("vBTCUSD") > 0)
                   & (pl.col("vBTCUSDC") > 0)).with_columns((pl.col("BTCUSD") / pl.col("BTCUSDC")).alias("usdc"))
    if day.height == 0:
        raise ValueError(f"{shared / BINANCEUS}: no minute of {DEPEG_DAY} where BTCUSD and BTCUSDC both traded")
    worst = day.sort("usdc", "open_time").row(0, named=True)
    usdt = worst["BTCUSD"] / worst["BTCUSDT"] if worst["vBTCUSDT"] > 0 else None
    return Depeg(worst["open_time"], worst["usdc"], usdt, start.row(0, named=True)["BTCUSD"], worst["BTCUSD"])


def build_usdc_depeg_2023(shared: Path = SHARED_DATA) -> ShockFile:
    """The USDC de-peg: USDC (and USDT) moves from the peg at the worst minute, BTC's own USD move to it."""
    d = usdc_depeg(shared)
    currency = [("USDC", d.usdc_usd - 1.0)]
    if d.usdt_usd is not None:
        currency.append(("USDT", d.usdt_usd - 1.0))
    return ShockFile("usdc_depeg_2023", (
        "USDC de-peg, March 2023: currency shock = close(BTC/USD) / close(BTC/USDC) - 1 at the worst minute",
        f"worst minute: {d.minute} (lowest USDC/USD on {DEPEG_DAY} among minutes where both pairs traded); "
        "USDT likewise through BTC/USDT at that minute",
        f"BTC: close(BTC/USD) at the worst minute / at {DEPEG_START} - 1; no '*' (other assets not shocked)",
        f"source: ../shared/data/{BINANCEUS}/BTCUSD|BTCUSDC|BTCUSDT_1m_20230301_20230321.csv.gz "
        "(Binance.US klines via cl8550-crypto/iaqf_analysis, no licence file)",
    ), (("BTC", d.btc_worst / d.btc_start - 1.0),), tuple(currency))


BUILDERS = (build_may_2021, build_covid_2020, build_usdc_depeg_2023)


def write_shock_file(shock_file: ShockFile, out_dir: Path = STRESS_DIR) -> Path:
    """Write `shock_file` to ``out_dir/<name>.csv`` (exact float reprs, so loading gives the same numbers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{shock_file.name}.csv"
    lines = [f"# {c}" for c in shock_file.comments]
    lines.append("kind,name,shock")
    lines += [f"asset,{name},{shock!r}" for name, shock in shock_file.shocks]
    lines += [f"currency,{name},{shock!r}" for name, shock in shock_file.currency_shocks]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_scenario_file(path: Path | str) -> tuple[Shocks, Shocks]:
    """The (asset shocks, currency shocks) of a shock file, in file order.

    Raises ValueError naming the file and line for a missing header, a bad kind, an empty name, a shock that is not
    a finite return >= -1, or a name listed twice.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "s.csv"
    ...     _ = p.write_text("# a comment\\nkind,name,shock\\nasset,BTC,-0.3\\nasset,*,-0.4\\ncurrency,USDC,-0.1\\n")
    ...     load_scenario_file(p)
    ((('BTC', -0.3), ('*', -0.4)), (('USDC', -0.1),))
    """
    path = Path(path)
    shocks: dict[str, float] = {}
    currency: dict[str, float] = {}
    header = False
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            cells = [c.strip() for c in row]
            if not header:
                if cells != ["kind", "name", "shock"]:
                    raise ValueError(f"{path}:{lineno}: expected the header 'kind,name,shock', got {','.join(row)!r}")
                header = True
                continue
            if len(cells) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 fields (kind,name,shock), got {len(cells)}")
            kind, name, text = cells
            table = {"asset": shocks, "currency": currency}.get(kind)
            if table is None:
                raise ValueError(f"{path}:{lineno}: kind must be 'asset' or 'currency', got {kind!r}")
            if not name:
                raise ValueError(f"{path}:{lineno}: empty name")
            if kind == "currency" and name == "*":
                raise ValueError(f"{path}:{lineno}: '*' is only for assets")
            try:
                shock = float(text)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: shock {text!r} is not a number") from None
            if not (math.isfinite(shock) and shock >= -1.0):
                raise ValueError(f"{path}:{lineno}: shock {text} must be a finite return >= -1")
            if name in table:
                raise ValueError(f"{path}:{lineno}: {kind} {name!r} listed twice")
            table[name] = shock
    if not header:
        raise ValueError(f"{path}: no 'kind,name,shock' header")
    if not shocks and not currency:
        raise ValueError(f"{path}: no shocks")
    return tuple(shocks.items()), tuple(currency.items())


def configured_scenarios(config: Config) -> tuple[Scenario, ...]:
    """The scenarios of ``risk.scenarios`` with their shock files loaded (a historical scenario's file is looked
    up in the working directory, then in the shipped data/stress); raises `ConfigError` naming a missing file."""
    out = []
    for i, sc in enumerate(config.risk.scenarios):
        shocks: Shocks = ()
        currency: Shocks = ()
        if sc.kind == "historical":
            path = next((p for p in (Path(sc.file), STRESS_DIR / sc.file) if p.is_file()), None)
            if path is None:
                raise ConfigError(f"risk.scenarios[{i}].file", f"no shock file {sc.file!r} (looked in the working "
                                                               f"directory and the shipped data/stress)")
            shocks, currency = load_scenario_file(path)
        out.append(Scenario(name=sc.name, kind=sc.kind, shocks=shocks, currency_shocks=currency, size=sc.size,
                            horizon_bars=sc.horizon_bars, venue=sc.venue))
    return tuple(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild every shock file from the shared data."""
    parser = argparse.ArgumentParser(prog="python -m headrace.stress_data", description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="the shared data directory")
    parser.add_argument("--out", type=Path, default=STRESS_DIR, help="where the shock files go")
    args = parser.parse_args(argv)
    for build in BUILDERS:
        sf = build(args.shared)
        path = write_shock_file(sf, args.out)
        worst = min((*sf.shocks, *sf.currency_shocks), key=lambda s: s[1])
        print(f"{path}: {len(sf.shocks)} asset and {len(sf.currency_shocks)} currency shocks, "
              f"worst {worst[0]} {worst[1]:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
