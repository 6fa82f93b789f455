"""`headrace venues`, `venues snapshot`, `live` and `paper`: on the real ccxt market dumps, with one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from headrace.cli import app
from helpers import SHARED_DATA

MARKETS = SHARED_DATA / "markets"
needs_markets = pytest.mark.skipif(not MARKETS.exists(), reason=f"real market dumps not found at {MARKETS}")
KEY, SECRET = "hr-planted-KEY-7f3a9c1e55d2", "hr-planted-SECRET-0b8e44a1c6f9"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(app, list(args))


def one_error_line(res: Result) -> str:
    """The whole stderr, which must be exactly one line; exit status 2 and no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for venue in ("BINANCE", "KRAKEN", "BYBIT"):
        monkeypatch.delenv(f"HEADRACE_API_KEY_{venue}", raising=False)
        monkeypatch.delenv(f"HEADRACE_API_SECRET_{venue}", raising=False)


# ---------------------------------------------------------------------------------------------------
# headrace venues


@needs_markets
def test_venues_lists_configured_venues_and_the_given_dumps_with_their_source() -> None:
    hyperliquid = MARKETS / "ccxt-dumps" / "hyperliquid_mkt_meta.json.gz"
    res = run("venues", "--markets", str(MARKETS / "ccxt"), "--markets", str(hyperliquid), "--json")
    assert res.exit_code == 0, res.stderr
    rows = {r["venue"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {"binance", "binanceus", "bittrex", "bybit", "hyperliquid", "kraken", "okx"}
    b = rows["binance"]
    assert (b["configured"], b["markets"], b["spot"], b["swap"], b["incomplete"], b["precision_mode"]) == (
        True, 16, 7, 9, 2, "DECIMAL_PLACES")
    assert b["source"] == str(MARKETS / "ccxt" / "binance.json")
    assert rows["bybit"]["configured"] is False and rows["bybit"]["precision_mode"] == "TICK_SIZE"
    assert rows["hyperliquid"]["source"] == str(hyperliquid) and rows["hyperliquid"]["markets"] == 362
    assert (rows["bittrex"]["markets"], rows["bittrex"]["source"]) == (None, None)  # configured, no metadata


@needs_markets
def test_venues_symbol_shows_precision_limits_and_fees_per_venue() -> None:
    res = run("venues", "--markets", str(MARKETS / "ccxt"), "--symbol", "BTC/USDT:USDT", "--json")
    assert res.exit_code == 0, res.stderr
    by_venue = {d["venue"]: d for d in json.loads(res.stdout)}
    assert set(by_venue) == {"binance", "bybit", "okx"}
    b = by_venue["binance"]
    assert (b["type"], b["amount_precision"], b["price_precision"], b["min_amount"], b["min_cost"],
            b["taker_fee"], b["maker_fee"]) == ("swap", "3", "1", "0.001", "5", "0.0004", "0.0002")
    table = run("venues", "--markets", str(MARKETS / "ccxt" / "kraken.json"), "--symbol", "BTC/USD")
    assert table.exit_code == 0 and "kraken:BTC/USD" in table.stdout and "taker fee" in table.stdout


@needs_markets
def test_snapshot_from_a_recorded_dump_lists_as_a_snapshot_with_both_sources(tmp_path: Path) -> None:
    out = tmp_path / "snaps" / "binance.json"
    dump = MARKETS / "ccxt" / "binance.json"
    res = run("venues", "snapshot", "binance", "--out", str(out), "--from-dump", str(dump), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == {"venue": "binance", "out": str(out), "markets": 16,
                                      "precision_mode": "DECIMAL_PLACES", "source": str(dump)}
    doc = json.loads(out.read_text())
    assert (doc["venue"], doc["source"], doc["precision_mode"], len(doc["markets"])) == (
        "binance", str(dump), "DECIMAL_PLACES", 16)
    listed = run("venues", "--markets", str(out.parent), "--json")
    [row] = [r for r in json.loads(listed.stdout) if r["venue"] == "binance"]
    assert row["source"] == f"{out} <- {dump}" and row["markets"] == 16


def test_snapshot_from_the_venue_without_network_fails_in_one_line_naming_venue_and_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def no_network(host: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # as on a machine without network
    res = run("venues", "snapshot", "binance", "--out", str(tmp_path / "s.json"))
    line = one_error_line(res)
    assert line.startswith("error: venue 'binance': cannot load its markets (NetworkError: binance GET https://")
    assert "gaierror: " in line and "Name or service not known" in line
    assert calls and calls[0] == "api.binance.com"  # ccxt's real client tried the venue
    assert not (tmp_path / "s.json").exists()


def test_venues_online_without_network_fails_in_one_line_naming_the_venue(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    line = one_error_line(run("venues", "--online"))  # default config: binance, binanceus, bittrex, kraken
    assert line.startswith("error: venue 'binance': cannot load its markets (NetworkError: ") and "gaierror" in line


@needs_markets
@pytest.mark.parametrize("content, why", [
    (None, "no such file"),
    ('{"BTC/USDT": ', "not JSON (Expecting value at line 1 column 14)"),
    ('{"X/Y": {"symbol": "X/Y", "precision": {"amount": 1, "price": 1}}}',
     "not a ccxt markets dump or snapshot (missing 'base')"),
    ('[1, 2]', "not a ccxt markets dump (an object of symbol -> market) or snapshot"),
])
def test_a_missing_or_corrupt_markets_file_is_one_line(tmp_path: Path, content: str | None, why: str) -> None:
    path = tmp_path / "binance.json"
    if content is not None:
        path.write_text(content)
    listed = one_error_line(run("venues", "--markets", str(path)))
    assert listed == f"error: data file '{path}': {why}" + (" or folder" if content is None else "")
    res = run("venues", "snapshot", "binance", "--out", str(tmp_path / "o.json"), "--from-dump", str(path))
    assert one_error_line(res) == f"error: data file '{path}': {why}"


def test_other_venues_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.json.gz").write_bytes(b"not gzip")
    assert "not a JSON or gzipped JSON file" in one_error_line(run("venues", "--markets", str(tmp_path)))
    assert one_error_line(run("venues", "snapshot", "nosuch", "--out", str(tmp_path / "o.json"))) == (
        "error: unknown venue 'nosuch': not a ccxt exchange id (for example binance, kraken, okx)")
    assert "holds no market files" in one_error_line(run("venues", "--markets", str(tmp_path / "..")))
    if MARKETS.exists():
        assert one_error_line(run("venues", "--markets", str(MARKETS / "ccxt"), "--symbol", "NO/PE")) == (
            "error: no venue with metadata lists the market 'NO/PE' (searched: binance, bybit, kraken, okx)")


# ---------------------------------------------------------------------------------------------------
# headrace live / paper


def test_live_without_the_live_flag_refuses_and_reads_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import headrace.cli_venues as cv

    def read_keys(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("keys were read without --live")

    monkeypatch.setattr(cv, "credentials", read_keys)
    for extra in ([], ["--testnet"]):
        res = run("live", "--venue", "binance", *extra)
        assert one_error_line(res) == "error: refusing to trade: add --live to send real orders"
        assert res.stdout == ""


def test_live_names_the_missing_variable_and_never_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    assert one_error_line(run("live", "--venue", "binance", "--live")) == (
        "error: missing environment variable HEADRACE_API_KEY_BINANCE (the API key of binance)")
    monkeypatch.setenv("HEADRACE_API_KEY_BINANCE", KEY)
    res = run("live", "--venue", "binance", "--live")
    assert one_error_line(res) == (
        "error: missing environment variable HEADRACE_API_SECRET_BINANCE (the API secret of binance)")
    assert KEY not in res.stdout + res.stderr
    monkeypatch.setenv("HEADRACE_API_SECRET_BINANCE", "  ")  # blank counts as missing
    assert "HEADRACE_API_SECRET_BINANCE" in one_error_line(run("live", "--venue", "binance", "--live"))


def test_live_with_keys_checks_testnet_and_needs_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_API_KEY_BINANCE", KEY)
    monkeypatch.setenv("HEADRACE_API_SECRET_BINANCE", SECRET)
    needs_router = ("error: config key 'router.enabled': live trading sends routed children, which need market "
                    "metadata: set [router] enabled = true (with router.markets, or the venues' own markets loaded "
                    "online)")
    assert one_error_line(run("live", "--venue", "binance", "--symbol", "BTC/USDT", "--live", "--testnet")) == \
        needs_router
    assert one_error_line(run("live", "--instrument", "BINANCE:BTC/USDT", "--live")) == needs_router
    monkeypatch.setenv("HEADRACE_API_KEY_KRAKEN", KEY)
    monkeypatch.setenv("HEADRACE_API_SECRET_KRAKEN", SECRET)
    assert one_error_line(run("live", "--venue", "kraken", "--live", "--testnet")) == (
        "error: venue 'kraken' has no testnet in ccxt (no sandbox URLs): drop --testnet only if you mean real money")
    assert "unknown venue 'nosuch'" in one_error_line(run("live", "--venue", "nosuch"))
    assert "config key" in one_error_line(run("live", "--venue", "binance", "--set", "account.nope=1"))
    assert one_error_line(run("live", "--symbol", "BTC/USDT", "--live")) == (
        "error: no venue given: use --venue V --symbol BASE/QUOTE, or --instrument venue:BASE/QUOTE")
    on = ["--set", "router.enabled=true"]
    assert one_error_line(run("live", "--venue", "binance", "--symbol", "BTCUSDT", "--live", *on)) == (
        "error: config key '--symbol': 'BTCUSDT' on 'binance' must look like BASE/QUOTE (BTC/USDT) on a ccxt venue id")


def test_a_planted_key_and_secret_appear_in_no_output_and_no_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HEADRACE_API_KEY_BINANCE": KEY, "HEADRACE_API_SECRET_BINANCE": SECRET, "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    state = f"storage.state_dir={tmp_path / 'state'}"
    outputs = []
    for args in (["live", "--venue", "binance", "--symbol", "BTC/USDT", "--live", "--testnet", "--verbose"],
                 ["live", "--venue", "binance", "--live", "--verbose"]):  # as a user runs it: a process
        res = subprocess.run([sys.executable, "-m", "headrace.cli", *args, "--set", state], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        outputs.append(res.stdout + res.stderr)
    assert all("router.enabled" in o for o in outputs)
    assert "API key and secret found" in outputs[0]  # --verbose logged, without the values
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for args in (["live", "--venue", "binance", "--verbose"], ["paper", "--venue", "binance", "--verbose"]):
        res = run(*args, "--set", state)
        assert res.exit_code == 2
        outputs.append(res.stdout + res.stderr)
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (KEY, SECRET, KEY[-8:], SECRET[-8:]):
        assert all(secret not in o for o in outputs)
        assert all(secret.encode() not in w for w in written)


@needs_markets
def test_paper_checks_config_venues_and_instruments_before_any_connection() -> None:
    kraken = ["--markets", str(MARKETS / "ccxt" / "kraken.json")]
    assert one_error_line(run("paper", "--venue", "kraken", "--venue", "binance", *kraken)) == (
        "error: config key '--symbol': no instrument to trade: give --venue and --symbol, or --instrument")
    assert "unknown venue 'bittrex'" in one_error_line(run("paper", "--venue", "bittrex", "--symbol", "BTC/USDT"))
    assert "config key 'sizing.max_weight'" in one_error_line(
        run("paper", "--venue", "binance", "--set", "sizing.max_weight=7"))
    assert "config key '--duration'" in one_error_line(
        run("paper", "--venue", "binance", "--symbol", "BTC/USDT", "--duration", "soon"))
    assert "router.markets" in one_error_line(run("paper", "--instrument", "kraken:BTC/USD", "--markets",
                                                  "/nonexistent/markets.json", "--set", "router.enabled=true"))


def test_the_commands_are_registered_on_headrace() -> None:
    res = run("--help")
    assert res.exit_code == 0
    for name in ("venues", "live", "paper"):
        assert f" {name} " in res.stdout


def test_testnet_selects_the_ccxt_sandbox_urls_with_the_keys_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.cli_venues import _live_exchange

    monkeypatch.setenv("HEADRACE_API_KEY_BYBIT", KEY)
    monkeypatch.setenv("HEADRACE_API_SECRET_BYBIT", SECRET)
    test, real = _live_exchange("bybit", testnet=True), _live_exchange("bybit", testnet=False)
    assert (test.apiKey, test.secret) == (KEY, SECRET)
    assert test.urls["api"]["private"] == "https://api-testnet.{hostname}"  # ccxt fills in bybit.com
    assert "testnet" not in json.dumps(real.urls["api"])


def test_live_on_a_venue_with_a_passphrase_names_the_missing_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_API_KEY_OKX", KEY)
    monkeypatch.setenv("HEADRACE_API_SECRET_OKX", SECRET)
    monkeypatch.delenv("HEADRACE_API_PASSWORD_OKX", raising=False)
    res = run("live", "--venue", "okx", "--symbol", "BTC/USDT", "--live", "--set", "router.enabled=true")
    assert one_error_line(res) == (
        "error: missing environment variable HEADRACE_API_PASSWORD_OKX (the API password of okx)")
    assert KEY not in res.stdout + res.stderr and SECRET not in res.stdout + res.stderr
