"""Every panel of every dashboard, expanded as Grafana would and run on the replayed run in real chDB."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from conftest import ReplayedRun
from headrace.dashboards import (
    DASHBOARD_DIR,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    expand_macros,
    iter_panels,
    load_dashboards,
)
from headrace.events import Quarantined
from headrace.report import max_drawdown
from sinks.clickhouse import Store
from sinks.rows import to_arrow

DASHBOARDS = load_dashboards(DASHBOARD_DIR)
PANELS = [(d, p) for d in DASHBOARDS for p in iter_panels(d) if p.get("type") != "row"]
INTERVAL_MS = 600_000  # two 5-minute bars per bucket, so bucketing is exercised
QUARANTINE_REASON = "dashboard test: non-finite close"


def _panel_params() -> list[Any]:
    return [pytest.param(d, p, id=f"{d['uid']}:{p['title']}") for d, p in PANELS]


@dataclass(frozen=True)
class RunView:
    """The fixture run as a dashboard sees it: a store, the run id and the time range of its bars."""

    store: Store
    run_id: str
    time_from_ns: int
    time_to_ns: int

    def expand(self, sql: str) -> str:
        return expand_macros(sql, time_from_ns=self.time_from_ns, time_to_ns=self.time_to_ns,
                             interval_ms=INTERVAL_MS, variables={"run_id": self.run_id})

    def run(self, sql: str) -> list[dict[str, Any]]:
        return Store.connect(self.store.dsn).query(self.expand(sql))


@pytest.fixture(scope="module")
def run_view(replayed_run: ReplayedRun) -> Iterator[RunView]:
    """The replayed run plus one quarantined row (the fixture run has none), removed again afterwards."""
    store = Store.connect(replayed_run.dsn)
    span = store.query("SELECT toUnixTimestamp64Nano(min(ts_event)) AS lo, toUnixTimestamp64Nano(max(ts_event)) AS hi "
                       "FROM bars FINAL WHERE run_id = {r:String}", {"r": replayed_run.run_id})[0]
    lo, hi = int(span["lo"]), int(span["hi"])
    q = Quarantined(instrument="bittrex:ETH/BTC", ts_event=lo, ts_recv=lo, source="dashboard-test.csv", row=7,
                    reason=QUARANTINE_REASON, raw=Quarantined.raw_json({"close": float("nan")}))
    store.insert("quarantine", to_arrow("quarantine", replayed_run.run_id, [q]))
    yield RunView(store=store, run_id=replayed_run.run_id, time_from_ns=lo, time_to_ns=hi)
    Store.connect(replayed_run.dsn).command(
        "DELETE FROM quarantine WHERE run_id = {r:String} AND event_id = {e:String}",
        {"r": replayed_run.run_id, "e": q.event_id})


# ---------------------------------------------------------------------------------------------------
# Structure


def test_dashboard_files_are_valid_json_with_unique_uids() -> None:
    paths = sorted(DASHBOARD_DIR.glob("*.json"))
    assert [json.loads(p.read_text())["uid"] for p in paths] == [d["uid"] for d in DASHBOARDS]
    assert len({d["uid"] for d in DASHBOARDS}) == len(DASHBOARDS)
    assert "headrace-run" in {d["uid"] for d in DASHBOARDS}


@pytest.mark.parametrize("dash", DASHBOARDS, ids=[d["uid"] for d in DASHBOARDS])
def test_every_panel_has_a_unique_id_a_grid_position_and_the_clickhouse_datasource(dash: dict[str, Any]) -> None:
    panels = [p for p in iter_panels(dash) if p.get("type") != "row"]
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), ids
    for p in panels:
        grid = p.get("gridPos", {})
        assert set(grid) >= {"x", "y", "w", "h"}, p["title"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, p["title"]
        assert p["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}, p["title"]
    assert dash["schemaVersion"] >= 36


@pytest.mark.parametrize("dash", DASHBOARDS, ids=[d["uid"] for d in DASHBOARDS])
def test_panels_do_not_overlap(dash: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in iter_panels(dash):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize(("dash", "panel"), _panel_params())
def test_targets_are_raw_sql_in_the_format_their_panel_draws(dash: dict[str, Any], panel: dict[str, Any]) -> None:
    for t in panel["targets"]:
        assert t["editorType"] == "sql" and t["editorMode"] == "code" and t["rawSql"].strip()
        # the plugin: format 0 = time series, 1 = table; queryType mirrors it (v4 query model)
        assert (t["format"], t["queryType"]) in {(0, "timeseries"), (1, "table")}
        assert (t["format"] == 0) == (panel["type"] == "timeseries"), panel["title"]
        assert t["pluginVersion"] >= "4"  # so the plugin does not migrate the query as a v3 one


@pytest.mark.parametrize(("dash", "panel"), _panel_params())
def test_queries_read_headrace_tables_with_final(dash: dict[str, Any], panel: dict[str, Any]) -> None:
    for t in panel["targets"]:
        sources = re.findall(r"\bFROM\s+([\w.]+)(\s+FINAL\b)?", t["rawSql"], flags=re.IGNORECASE)
        assert sources, t["rawSql"]
        for table, final in sources:
            assert table.startswith("headrace.") and final, f"{panel['title']!r} reads {table!r} without FINAL"


def test_no_dashboard_uses_the_sdk_default_time_from_and_to_macros() -> None:
    # $__timeFrom()/$__timeTo() are not ClickHouse plugin macros: the SDK's defaults render broken SQL for them
    for dash in DASHBOARDS:
        text = json.dumps(dash)
        assert "$__timeFrom" not in text and "$__timeTo" not in text


# ---------------------------------------------------------------------------------------------------
# Every query on the real replayed run


def _named_fields(panel: dict[str, Any]) -> set[str]:
    # the result fields a panel refers to by name: overrides, organize transformations, bar chart x field
    names = {o["matcher"]["options"] for o in panel["fieldConfig"].get("overrides", [])
             if o["matcher"]["id"] == "byName"}
    for tr in panel.get("transformations", []):
        if tr["id"] == "organize":
            for key in ("indexByName", "renameByName", "excludeByName"):
                names |= set(tr["options"].get(key, {}))
    if panel["options"].get("xField"):
        names.add(panel["options"]["xField"])
    return names


@pytest.mark.parametrize(("dash", "panel"), _panel_params())
def test_panel_query_returns_rows_with_the_fields_the_panel_uses(
        dash: dict[str, Any], panel: dict[str, Any], run_view: RunView) -> None:
    for t in panel["targets"]:
        rows = run_view.run(t["rawSql"])
        assert rows, f"{panel['title']!r} returned no rows for run {run_view.run_id!r}"
        columns = list(rows[0])
        assert _named_fields(panel) <= set(columns), (panel["title"], columns)
        numeric = [c for c in columns
                   if all(isinstance(r[c], int | float) and not isinstance(r[c], bool) for r in rows)]
        assert numeric, f"{panel['title']!r} has no numeric column: {columns}"
        if t["format"] == 0:  # a time series: `time` first, ascending; then labels (strings) and values
            assert columns[0] == "time", columns
            times = [r["time"] for r in rows]
            assert all(isinstance(x, datetime) for x in times)
            assert times == sorted(times), f"{panel['title']!r}: rows not in time order"
            assert all(isinstance(r[c], str) or c in numeric for r in rows for c in columns[1:])


def test_run_variable_lists_the_fixture_run(run_view: RunView) -> None:
    for dash in DASHBOARDS:
        for var in dash["templating"]["list"]:
            if var["name"] == "run_id":
                assert var["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
                runs = [next(iter(r.values())) for r in run_view.run(var["query"])]
                assert run_view.run_id in runs and len(runs) == len(set(runs))


def _panel(title: str) -> dict[str, Any]:
    return next(p for _, p in PANELS if p["title"] == title)


def _equity(view: RunView) -> tuple[np.ndarray, np.ndarray]:
    rows = view.store.query("SELECT toUnixTimestamp64Nano(ts_event) AS ts, equity FROM equity FINAL "
                            "WHERE run_id = {r:String} ORDER BY ts_event", {"r": view.run_id})
    return np.array([r["equity"] for r in rows]), np.array([r["ts"] for r in rows], dtype=np.int64)


def test_drawdown_panels_agree_with_the_run_summary(run_view: RunView) -> None:
    equity, _ = _equity(run_view)
    mdd = max_drawdown(equity)
    assert mdd > 0  # the fixture run does lose from a peak, so this compares something
    [stat] = run_view.run(_panel("Max drawdown")["targets"][0]["rawSql"])
    assert math.isclose(stat["max_drawdown"], mdd, rel_tol=1e-12)
    curve = run_view.run(_panel("Drawdown")["targets"][0]["rawSql"])
    assert math.isclose(min(r["drawdown"] for r in curve), -mdd, rel_tol=1e-12)
    assert max(r["drawdown"] for r in curve) == 0.0  # at a new high


def test_total_return_and_equity_panels_agree_with_the_equity_table(run_view: RunView) -> None:
    equity, _ = _equity(run_view)
    [ret] = run_view.run(_panel("Total return")["targets"][0]["rawSql"])
    assert math.isclose(ret["total_return"], equity[-1] / equity[0] - 1, rel_tol=1e-12)
    [last] = run_view.run(_panel("Equity")["targets"][0]["rawSql"])
    assert last["equity"] == equity[-1]


def test_pnl_by_instrument_is_realized_plus_unrealized_minus_fees_of_the_last_position(run_view: RunView) -> None:
    last = run_view.store.query(
        "SELECT instrument, argMax(realized_pnl + unrealized_pnl - fees, ts_event) AS net FROM positions FINAL "
        "WHERE run_id = {r:String} GROUP BY instrument", {"r": run_view.run_id})
    got = {r["instrument"]: r["net_pnl"] for r in run_view.run(_panel("PnL by instrument")["targets"][0]["rawSql"])}
    assert got.keys() == {r["instrument"] for r in last}
    assert all(math.isclose(got[r["instrument"]], r["net"], rel_tol=1e-12, abs_tol=1e-15) for r in last)


def test_quarantine_panels_count_the_quarantined_row(run_view: RunView) -> None:
    by_reason = run_view.run(_panel("Quarantined rows by reason")["targets"][0]["rawSql"])
    assert [(r["reason"], r["quarantined_rows"]) for r in by_reason] == [(QUARANTINE_REASON, 1)]
    by_instrument = run_view.run(_panel("Quarantined rows by instrument")["targets"][0]["rawSql"])
    assert [(r["instrument_name"], r["quarantined_rows"]) for r in by_instrument] == [("bittrex:ETH/BTC", 1)]
    assert run_view.run(_panel("Quarantined rows")["targets"][0]["rawSql"]) == [{"quarantined": 1}]


def test_time_filtered_panels_see_nothing_outside_the_run(run_view: RunView) -> None:
    before = RunView(run_view.store, run_view.run_id, time_from_ns=0, time_to_ns=run_view.time_from_ns - 10**12)
    assert before.run(_panel("Recent fills")["targets"][0]["rawSql"]) == []
    assert before.run(_panel("Equity curve")["targets"][0]["rawSql"]) == []


# ---------------------------------------------------------------------------------------------------
# expand_macros against the plugin's documented expansions (grafana/clickhouse-datasource README, macros.go)

FROM_NS = 1_415_792_726_371_000_000  # 2014-11-12T11:45:26.371Z, the plugin's own test time
TO_NS = 1_447_328_726_371_000_000  # 2015-11-12T11:45:26.371Z


def _expand(sql: str, interval_ms: int = 20_000, **variables: str | list[str]) -> str:
    return expand_macros(sql, time_from_ns=FROM_NS, time_to_ns=TO_NS, interval_ms=interval_ms, variables=variables)


@pytest.mark.parametrize(("sql", "expected"), [
    ("$__timeFilter(time)", "time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"),
    ("$__timeFilter_ms(time)",
     "time >= fromUnixTimestamp64Milli(1415792726371) AND time <= fromUnixTimestamp64Milli(1447328726371)"),
    ("$__dateFilter(date)", "date >= toDate('2014-11-12') AND date <= toDate('2015-11-12')"),
    ("$__dateTimeFilter(d, t)", "(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
                                "(t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))"),
    ("$__dt(d, t)", "(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
                    "(t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))"),
    ("$__fromTime, $__toTime", "toDateTime(1415792726), toDateTime(1447328726)"),
    ("$__fromTime_ms / $__toTime_ms",
     "fromUnixTimestamp64Milli(1415792726371) / fromUnixTimestamp64Milli(1447328726371)"),
    ("$__interval_s", "20"),
    ("$__timeInterval(col)", "toStartOfInterval(toDateTime(col), INTERVAL 20 second)"),
    ("$__timeInterval_ms(col)", "toStartOfInterval(toDateTime64(col, 3), INTERVAL 20000 millisecond)"),
    ("$__timeInterval(toStartOfDay(col))", "toStartOfInterval(toDateTime(toStartOfDay(col)), INTERVAL 20 second)"),
    ("$__interval / $__interval_ms", "20s / 20000"),
    # sqlutil's defaults: a column argument and an RFC 3339 string, and broken SQL without a column
    ("$__timeFrom(t)", "t >= '2014-11-12T11:45:26Z'"),
    ("$__timeFrom()", " >= '2014-11-12T11:45:26Z'"),
])
def test_expand_macros_matches_the_plugin(sql: str, expected: str) -> None:
    assert _expand(sql) == expected


def test_interval_s_is_at_least_one_second() -> None:
    assert _expand("$__interval_s", interval_ms=250) == "1"
    assert _expand("$__timeInterval(c)", interval_ms=1999) == "toStartOfInterval(toDateTime(c), INTERVAL 1 second)"


def test_every_occurrence_of_a_macro_is_expanded() -> None:
    got = _expand("a > $__fromTime AND b > $__fromTime AND $__timeFilter(x) AND $__timeFilter(y)")
    assert "$__" not in got
    assert got.count("toDateTime(1415792726)") == 4


def test_template_variables_are_replaced_and_unknown_ones_left_alone() -> None:
    sql = "'${run_id}' $run_id [[run_id]] ${run_id:sqlstring} $other ${__from} $__to"
    assert _expand(sql, run_id="r'1") == "'r'1' r'1 r'1 'r''1' $other 1415792726371 1447328726371"
    assert _expand("IN (${runs})", runs=["a", "b"]) == "IN ('a','b')"


def test_expand_macros_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="expected 1 argument"):
        _expand("$__timeFilter(a, b)")
    with pytest.raises(ValueError, match="missing close bracket"):
        _expand("$__timeFilter(a")
    with pytest.raises(ValueError, match="ends before it starts"):
        expand_macros("x", time_from_ns=2, time_to_ns=1)
