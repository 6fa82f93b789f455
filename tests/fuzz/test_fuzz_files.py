"""Mutated real files: every outcome is a clean one-line error or a completed read with quarantine.

A seeded mutator damages slices of real files (the repo's demo feathers; CSV slices of ../shared/data
when it is there, else CSVs written from the demo data): flipped bytes, truncation, dropped and swapped
columns, edge values (0, -1, 1e308, 5e-324, NaN, year 3000, empty strings), stray quotes, ragged rows.
Each file goes through `read_paths`, `ReplayPlan.build` and `MarketValidator`, as a replay does. The
counts are printed (``pytest -s``); run ``FUZZ_CASES=3000 pytest tests/fuzz`` for a longer search.
"""

from __future__ import annotations

import gzip
import itertools
import os
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest

from headrace.errors import ConfigError, DataSourceError
from headrace.events import Quarantined
from helpers import SHARED_DATA
from operators.validation.market_checks import MarketValidator
from sources.formats import read_paths
from sources.replay_plan import ReplayPlan

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo" / "bittrex"
SEED = 20_261_129
CASES = int(os.environ.get("FUZZ_CASES", "300"))
ROWS = 400  # rows of each base file
Y3000_MS = 32_503_680_000_000
EDGE_NUMBERS = [0, -1, 1e308, 5e-324, float("nan"), float("inf"), Y3000_MS]
EDGE_TEXT = ["0", "-1", "1e308", "5e-324", "NaN", "", "3000-01-01T00:00:00", "01/10/2018 04:55", '"', "abc"]


def base_files(dst: Path) -> list[Path]:
    """Write the unmutated base files (real data, cut to ROWS rows) under `dst`, in their layouts' folders."""
    out = []
    for f in sorted(DEMO.glob("*.feather"))[:4]:
        path = dst / "bittrex" / f.name
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.read_ipc(f).head(ROWS).write_ipc(path, compression="lz4")
        out.append(path)
    eth = pl.read_ipc(DEMO / "ETH_BTC-5m.feather").head(ROWS)
    path = dst / "bittrex" / "ETH_BTC-5m.parquet"
    eth.write_parquet(path, row_group_size=100)
    out.append(path)
    path = dst / "bittrex" / "ADA_BTC-5m.csv"
    pl.read_ipc(DEMO / "ADA_BTC-5m.feather").head(ROWS).with_columns(pl.col("date").dt.epoch("ms")).write_csv(path)
    out.append(path)
    path = dst / "bittrex" / "LTC_BTC-5m.csv"
    pl.read_ipc(DEMO / "LTC_BTC-5m.feather").head(ROWS).with_columns(
        pl.col("date").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(path)
    out.append(path)
    if SHARED_DATA.exists():
        for rel, header in (("cross_venue/kraken/XBTUSD_5.csv.gz", 0), ("cross_venue/binanceus/"
                            "BTCUSD_1m_20230301_20230321.csv.gz", 1), ("ohlcv/binance/ADABTC-1m-2021-11-27.csv", 0),
                            ("ticks/tardis/bitmex_trades_XBTUSD.csv", 1), ("trades/kraken/trades_csv/BCHEUR.csv", 0)):
            src = SHARED_DATA / rel
            opener = gzip.open if rel.endswith(".gz") else open
            with opener(src, "rt") as f:  # type: ignore[operator]
                lines = list(itertools.islice(f, ROWS + header))
            path = dst / Path(rel).parent.name / Path(rel).name.removesuffix(".gz")
            if Path(rel).parent.name == "trades_csv":
                path = dst / "kraken" / Path(rel).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(lines))
            out.append(path)
    return out


# mutations: each takes the file's bytes or frame and a random source, and returns the damaged one


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def stray_quote(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    j = rng.randrange(len(lines[i]) + 1)
    lines[i] = lines[i][:j] + b'"' + lines[i][j:]
    return b"\n".join(lines)


def ragged_row(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    cells = lines[i].split(b",")
    if rng.random() < 0.5 and len(cells) > 1:
        del cells[rng.randrange(len(cells))]
    else:
        cells.insert(rng.randrange(len(cells) + 1), b"7")
    lines[i] = b",".join(cells)
    return b"\n".join(lines)


def drop_column(df: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    return df.drop(rng.choice(df.columns)) if df.width > 1 else df


def swap_columns(df: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    a, b = rng.sample(df.columns, 2)
    return df.rename({a: b, b: a})


def edge_values(df: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    col = rng.choice(df.columns)
    rows = rng.sample(range(df.height), min(df.height, rng.randint(1, 5)))
    s = df[col]
    if s.dtype == pl.Utf8:
        value: object = rng.choice(EDGE_TEXT)
    elif s.dtype.is_temporal():
        value = rng.choice([None, -1, 0, Y3000_MS])
        s = s.cast(pl.Int64)  # the column becomes integers: its unit is told from the magnitude
    else:
        value = rng.choice(EDGE_NUMBERS)
        s = s.cast(pl.Float64) if isinstance(value, float) else s
    vals = s.to_list()
    for r in rows:
        vals[r] = value
    return df.with_columns(pl.Series(col, vals, dtype=pl.Float64 if s.dtype == pl.Float64 else None, strict=False))


BYTE_MUTATIONS: list[Callable[[bytes, random.Random], bytes]] = [flip_bytes, truncate]
TEXT_MUTATIONS: list[Callable[[bytes, random.Random], bytes]] = [stray_quote, ragged_row]
FRAME_MUTATIONS: list[Callable[[pl.DataFrame, random.Random], pl.DataFrame]] = [drop_column, swap_columns,
                                                                                edge_values]


def load(path: Path) -> pl.DataFrame:
    # through pyarrow, which raises on a damaged file where polars' own readers may panic
    if path.suffix in (".feather", ".parquet"):
        table = pa_ipc.open_file(str(path)).read_all() if path.suffix == ".feather" else pq.read_table(path)
        table.validate(full=True)
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        return df
    return pl.read_csv(path, has_header=False, infer_schema=False)  # headers stay a row: a text edit


def save(df: pl.DataFrame, path: Path) -> None:
    if path.suffix == ".feather":
        df.write_ipc(path, compression="lz4")
    elif path.suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path, include_header=False)


def mutate(src: Path, dst: Path, rng: random.Random) -> list[str]:
    shutil.copyfile(src, dst)
    done = []
    for _ in range(rng.randint(1, 3)):
        is_text = dst.suffix == ".csv"
        kinds = ["bytes", "frame"] + (["text"] if is_text else [])
        kind = rng.choice(kinds)
        if kind == "frame":
            try:
                df = load(dst)
            except (pl.exceptions.PolarsError, pa.ArrowException, OSError):  # too damaged to load
                continue
            if df.height < 2 or df.width < 2:
                continue
            m = rng.choice(FRAME_MUTATIONS)
            save(m(df, rng), dst)
        else:
            m = rng.choice(BYTE_MUTATIONS if kind == "bytes" else TEXT_MUTATIONS)  # type: ignore[assignment]
            data = dst.read_bytes()
            if data:
                dst.write_bytes(m(data, rng))  # type: ignore[arg-type]
        done.append(m.__name__)
    return done


def replay_read(path: Path) -> int:
    """Read, plan and validate one file as a replay does; return the number of rows quarantined."""
    frames = read_paths([str(path)])
    plan = ReplayPlan.build(frames, 100)
    validators = {i: MarketValidator() for i in plan.universe}
    quarantined = 0
    for j in range(plan.n_slices):
        for item in plan.slice(j):
            quarantined += sum(isinstance(o, Quarantined) for o in validators[item.instrument].update(item))
    return quarantined


def test_mutated_real_files_end_in_a_clean_error_or_a_completed_read(tmp_path: Path) -> None:
    bases = base_files(tmp_path / "base")
    rng = random.Random(SEED)
    counts: Counter[str] = Counter()
    others: list[str] = []
    for case in range(CASES):
        src = bases[case % len(bases)]
        dst = tmp_path / f"case{case}" / src.parent.name / src.name
        dst.parent.mkdir(parents=True)
        done = mutate(src, dst, rng)
        try:
            quarantined = replay_read(dst)
        except (DataSourceError, ConfigError) as e:
            msg = str(e)
            if "\n" in msg or len(msg) > 600:
                others.append(f"{dst.name} {done}: error not one short line: {msg[:300]!r}")
            counts["clean error"] += 1
        except BaseException as e:  # the point is to catch everything, a polars panic too
            if isinstance(e, KeyboardInterrupt):
                raise
            others.append(f"{dst.name} {done}: {type(e).__name__}: {str(e)[:300]}")
            counts["other"] += 1
        else:
            counts["completed with quarantine" if quarantined else "completed clean"] += 1
        shutil.rmtree(dst.parent.parent)
    print(f"fuzz seed={SEED} files={CASES}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    assert others == []
    assert counts["clean error"] > 0 and counts["completed with quarantine"] > 0  # the mutator does damage


@pytest.mark.parametrize("rel", ["bittrex/ETH_BTC-5m.feather", "bittrex/ADA_BTC-5m.csv"])
def test_the_unmutated_base_files_read_cleanly(tmp_path: Path, rel: str) -> None:
    base_files(tmp_path)
    assert replay_read(tmp_path / rel) == 0
