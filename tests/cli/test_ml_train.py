"""`headrace ml train` end to end: one real replay of three Bittrex instruments with three candidate models in
shadow, ranked by decision-time IC; the shadow candidates leave the trading as it is without ML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner, Result

from headrace.cli import app
from helpers import ROOT

pytestmark = pytest.mark.slow

DEMO = ROOT / "data" / "demo" / "bittrex"  # the real Bittrex 5-minute bars carried by the repo
BARS = 1500  # of each instrument: about five days
FAST = ["--set", "strategy.rebalance_bars=12", "--set", "ml.horizon_bars=12"]
KEYS = {"rank", "name", "mode", "kind", "algorithm", "pooled", "samples", "ic", "prequential_ic", "hit_rate",
        "log_loss", "drift_events"}
CANDIDATES = """
[[models]]
name = "logit_pooled"
kind = "classifier"

[[models]]
name = "linear_each"
kind = "regressor"
pooled = false

[[models]]
name = "forest_pooled"
kind = "classifier"
algorithm = "forest"
mode = "blended"  # ignored: candidates run in shadow
"""


def _run(*args: str, state: Path) -> Result:
    return CliRunner().invoke(app, [*args, "--set", f"storage.state_dir={state}"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """The first BARS bars of three instruments, the candidates file, and `ml train --json` over them."""
    if not DEMO.exists():
        pytest.skip(f"needs the demo data: {DEMO} is missing")
    tmp = tmp_path_factory.mktemp("ml-train")
    data = tmp / "data"
    data.mkdir()
    for base in ("ETH", "LTC", "XMR"):
        pl.read_ipc(DEMO / f"{base}_BTC-5m.feather").head(BARS).write_ipc(data / f"{base}_BTC-5m.feather")
    models = tmp / "models.toml"
    models.write_text(CANDIDATES, encoding="utf-8")
    res = _run("ml", "train", "--data", str(data), "--venue", "bittrex", "--models", str(models), "--run-id", "tr",
               "--quiet", "--json", *FAST, state=tmp / "state")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)  # exactly one JSON document
    assert isinstance(rows, list)
    return tmp, data, rows


def test_train_ranks_the_candidates_in_shadow_by_decision_time_ic(
        trained: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, _, rows = trained
    assert all(set(r) >= KEYS for r in rows)
    models = [r for r in rows if r["rank"] is not None]
    assert [r["rank"] for r in models] == [1, 2, 3]
    assert {r["name"] for r in models} == {"logit_pooled", "linear_each", "forest_pooled"}
    assert all(r["mode"] == "shadow" for r in models)  # the forest's mode = "blended" was ignored
    assert all(r["samples"] > 0 and r["ic"] is not None for r in models)
    ics = [r["ic"] for r in models]
    assert ics == sorted(ics, reverse=True)
    by_name = {r["name"]: r for r in models}
    assert (by_name["linear_each"]["kind"], by_name["linear_each"]["pooled"]) == ("regressor", False)
    assert (by_name["forest_pooled"]["algorithm"], by_name["forest_pooled"]["pooled"]) == ("forest", True)
    assert by_name["logit_pooled"]["log_loss"] is not None and by_name["linear_each"]["log_loss"] is None
    rules = rows[len(models):]  # after the models, unranked
    assert rules and all(r["mode"] == "rules" and r["rank"] is None and r["algorithm"] is None for r in rules)
    assert {r["name"] for r in rules} >= {"xs_momentum"}


def test_shadow_candidates_trade_as_a_replay_without_ml(trained: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    tmp, data, _ = trained
    state = tmp / "state"
    res = _run("replay", "--data", str(data), "--venue", "bittrex", "--run-id", "off", "--quiet", "--json", *FAST,
               "--set", "ml.enabled=false", state=state)
    assert res.exit_code == 0, res.output
    off = json.loads(res.stdout)
    assert off["fills"] > 0

    def fills(run: str) -> list[dict[str, Any]]:
        res = _run("db", "query", f"SELECT instrument, side, price, amount, toUnixTimestamp64Nano(ts_event) AS ts "
                   f"FROM fills FINAL WHERE run_id = '{run}' ORDER BY ts, instrument", "--json", state=state)
        assert res.exit_code == 0, res.output
        rows: list[dict[str, Any]] = json.loads(res.stdout)
        return rows

    trained_fills = fills("tr")
    assert len(trained_fills) == off["fills"]
    assert trained_fills == fills("off")

def test_train_names_the_wrong_key_of_the_candidates_file(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "a"\n\n[[models]]\nname = "b"\nkind = "ranker"\n', encoding="utf-8")
    res = _run("ml", "train", "--data", str(DEMO), "--models", str(models), state=tmp_path / "state")
    assert res.exit_code == 1
    assert "models[1].kind" in res.stderr and str(models) in res.stderr
    res = _run("ml", "train", "--data", str(DEMO), "--models", str(tmp_path / "none.toml"), state=tmp_path / "state")
    assert res.exit_code == 1
    assert "none.toml" in res.stderr and "does not exist" in res.stderr
