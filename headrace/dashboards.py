"""Grafana dashboards as files: load them, expand their SQL as Grafana would, push them to a Grafana.

The dashboards in ``dashboards/*.json`` read ClickHouse through the Grafana ClickHouse data source plugin
(``grafana-clickhouse-datasource``, data source uid ``clickhouse``). `expand_macros` turns a panel's raw SQL
into the SQL the plugin sends to ClickHouse for a given time range and template variables, so tests can run
every panel's query on a real store. `push` uploads every dashboard through the Grafana HTTP API
(``POST /api/dashboards/db`` with ``overwrite: true``).

The Grafana API token comes from ``HEADRACE_GRAFANA_TOKEN`` (or the caller) and is never logged, stored or
put in an error message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from headrace.errors import HeadraceError

logger = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboards"
DATASOURCE_UID = "clickhouse"
DATASOURCE_TYPE = "grafana-clickhouse-datasource"
TOKEN_ENV = "HEADRACE_GRAFANA_TOKEN"


class DashboardError(HeadraceError):
    """A dashboard file cannot be used, or Grafana refused it; names the file or dashboard and the reason."""


# ---------------------------------------------------------------------------------------------------
# Loading


def load_dashboards(dashboard_dir: str | Path = DASHBOARD_DIR) -> list[dict[str, Any]]:
    """Read every ``*.json`` dashboard in `dashboard_dir`, in file name order.

    Parameters
    ----------
    dashboard_dir
        Folder of Grafana dashboard JSON files (the model Grafana exports, without the API wrapper).

    Returns
    -------
    list of dict
        One dashboard model per file; each has a non-empty ``uid`` and ``title``.

    Raises
    ------
    DashboardError
        When the folder holds no dashboard, a file is not valid JSON, or a dashboard has no uid or title.
    """
    folder = Path(dashboard_dir)
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise DashboardError(f"dashboard folder {str(folder)!r} holds no *.json dashboard")
    out = []
    for path in paths:
        try:
            dash = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DashboardError(f"dashboard file {str(path)!r} is not readable JSON: {e}") from e
        if not isinstance(dash, dict) or not dash.get("uid") or not dash.get("title"):
            raise DashboardError(f"dashboard file {str(path)!r}: expected an object with a uid and a title")
        out.append(dash)
    return out


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel of `dashboard`, including panels nested in collapsed rows (rows themselves too)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


# ---------------------------------------------------------------------------------------------------
# Macro expansion, as Grafana and the ClickHouse plugin do it
#
# Two stages, in Grafana's order:
# 1. the browser replaces template variables ($var, ${var}, ${var:format}, [[var]]) and the built-in
#    $__from, $__to, $__interval and $__interval_ms (grafana/grafana public/app/features/templating/
#    template_srv.ts; the ClickHouse plugin formats a single value as is, several as 'a','b');
# 2. the plugin's backend expands its macros with grafana-plugin-sdk-go `sqlutil.Interpolate`
#    (data/sqlutil/macros.go): the plugin's macros (grafana/clickhouse-datasource pkg/macros/macros.go)
#    merged over sqlutil's `DefaultMacros`, applied longest name first, each found by the regexp
#    `\$__<name>\b` followed by an optional balanced-bracket argument list, every occurrence replaced.
#
# Note for dashboard authors: the plugin has $__fromTime / $__toTime (toDateTime(<unix s>)). The names
# $__timeFrom / $__timeTo only reach sqlutil's defaults, which take a column argument and render an
# RFC 3339 string comparison (`col >= '2018-01-10T05:00:00Z'`); `$__timeFrom()` with no column renders
# broken SQL. The headrace dashboards therefore use $__fromTime / $__toTime.

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


@dataclass(frozen=True, slots=True)
class _Query:
    time_from_ns: int
    time_to_ns: int
    interval_ms: int


def _unix_s(ns: int) -> int:
    return ns // 1_000_000_000  # Go time.Unix(): whole seconds, floored


def _unix_ms(ns: int) -> int:
    return ns // 1_000_000


def _date(ns: int) -> str:
    return datetime.fromtimestamp(_unix_s(ns), UTC).strftime("%Y-%m-%d")


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(_unix_s(ns), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_interval(ms: int) -> str:
    # grafana-plugin-sdk-go backend/gtime.FormatInterval
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms" if ms >= 1 else "1ms"


def _args(args: list[str] | None, n: int, name: str) -> list[str]:
    if args is None or len(args) != n:
        got = 0 if args is None else len(args)
        raise ValueError(f"macro $__{name}: expected {n} argument(s), received {got}")
    return args


def _time_filter(q: _Query, a: list[str] | None) -> str:
    (col,) = _args(a, 1, "timeFilter")
    return f"{col} >= toDateTime({_unix_s(q.time_from_ns)}) AND {col} <= toDateTime({_unix_s(q.time_to_ns)})"


def _time_filter_ms(q: _Query, a: list[str] | None) -> str:
    (col,) = _args(a, 1, "timeFilter_ms")
    return (f"{col} >= fromUnixTimestamp64Milli({_unix_ms(q.time_from_ns)}) AND "
            f"{col} <= fromUnixTimestamp64Milli({_unix_ms(q.time_to_ns)})")


def _date_filter(q: _Query, a: list[str] | None) -> str:
    (col,) = _args(a, 1, "dateFilter")
    return f"{col} >= toDate('{_date(q.time_from_ns)}') AND {col} <= toDate('{_date(q.time_to_ns)}')"


def _date_time_filter(q: _Query, a: list[str] | None) -> str:
    date_col, time_col = _args(a, 2, "dateTimeFilter")
    return (f"({date_col} >= toDate('{_date(q.time_from_ns)}') AND {date_col} <= toDate('{_date(q.time_to_ns)}')) "
            f"AND ({time_col} >= toDateTime({_unix_s(q.time_from_ns)}) AND "
            f"{time_col} <= toDateTime({_unix_s(q.time_to_ns)}))")


def _interval_s(q: _Query) -> int:
    return max(q.interval_ms // 1000, 1)  # int(math.Max(Interval.Seconds(), 1))


def _time_interval(q: _Query, a: list[str] | None) -> str:
    (col,) = _args(a, 1, "timeInterval")
    return f"toStartOfInterval(toDateTime({col}), INTERVAL {_interval_s(q)} second)"


def _time_interval_ms(q: _Query, a: list[str] | None) -> str:
    (col,) = _args(a, 1, "timeInterval_ms")
    return f"toStartOfInterval(toDateTime64({col}, 3), INTERVAL {max(q.interval_ms, 1)} millisecond)"


def _default_time_from(q: _Query, a: list[str] | None) -> str:
    (col,) = _args(a, 1, "timeFrom")
    return f"{col} >= '{_rfc3339(q.time_from_ns)}'"


def _default_time_to(q: _Query, a: list[str] | None) -> str:
    (col,) = _args(a, 1, "timeTo")
    return f"{col} <= '{_rfc3339(q.time_to_ns)}'"


def _default_time_group(q: _Query, a: list[str] | None) -> str:
    col, period = _args(a, 2, "timeGroup")
    parts = ["minute", "hour", "day", "month", "year"]
    if period not in parts:
        return ""
    return ",".join(f"datepart({p}, {col})" for p in parts[parts.index(period):])


_Macro = Callable[[_Query, "list[str] | None"], str]

_MACROS: dict[str, _Macro] = {
    # sqlutil.DefaultMacros (the plugin's own macros below override timeFilter)
    "interval": lambda q, a: _format_interval(q.interval_ms),
    "interval_ms": lambda q, a: str(q.interval_ms),
    "timeFilter": _time_filter,
    "timeFrom": _default_time_from,
    "timeTo": _default_time_to,
    "timeGroup": _default_time_group,
    "table": lambda q, a: "",  # raw SQL queries carry no table or column
    "column": lambda q, a: "",
    # grafana/clickhouse-datasource pkg/macros/macros.go
    "fromTime": lambda q, a: f"toDateTime({_unix_s(q.time_from_ns)})",
    "toTime": lambda q, a: f"toDateTime({_unix_s(q.time_to_ns)})",
    "fromTime_ms": lambda q, a: f"fromUnixTimestamp64Milli({_unix_ms(q.time_from_ns)})",
    "toTime_ms": lambda q, a: f"fromUnixTimestamp64Milli({_unix_ms(q.time_to_ns)})",
    "timeFilter_ms": _time_filter_ms,
    "dateFilter": _date_filter,
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "timeInterval": _time_interval,
    "timeInterval_ms": _time_interval_ms,
    "interval_s": lambda q, a: str(_interval_s(q)),
}


def _parse_args(text: str) -> tuple[list[str] | None, int]:
    # sqlutil parseArgs: a bracketed, comma-separated list at the start of `text`, nested brackets kept
    if not text.startswith("("):
        return None, 0
    args: list[str] = []
    depth = 0
    arg: list[str] = []
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(arg).strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append("".join(arg).strip())
            arg = []
            continue
        arg.append(ch)
    raise ValueError(f"failed to parse macro arguments (missing close bracket?) in {text[:60]!r}")


def _interpolate_macros(sql: str, q: _Query) -> str:
    for name in sorted(_MACROS, key=len, reverse=True):  # longest first, as sqlutil.Interpolate
        # `\b` like Go's RE2: ASCII word characters only
        text = sql  # matches and their arguments are read from the SQL as it was before this macro
        for m in list(re.finditer(rf"\$__{re.escape(name)}\b", text, flags=re.ASCII)):
            args, length = _parse_args(text[m.end():])
            full = text[m.start():m.end() + length]
            sql = sql.replace(full, _MACROS[name](q, args))
    return sql


def _format_value(value: str | list[str], fmt: str | None, name: str) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if fmt is None:  # the ClickHouse plugin's own formatter
        return values[0] if isinstance(value, str) else ",".join(f"'{v}'" for v in values)
    if fmt in ("raw", "text", "csv"):
        return ",".join(values)
    if fmt in ("sqlstring", "singlequote"):
        return ",".join("'" + v.replace("'", "''" if fmt == "sqlstring" else "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise ValueError(f"template variable {name!r}: format {fmt!r} is not supported by expand_macros")


def _interpolate_variables(sql: str, variables: Mapping[str, str | list[str]]) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name not in variables:
            return m.group(0)  # Grafana leaves unknown names (and every $__macro) untouched
        if m.group(5):
            raise ValueError(f"template variable {name!r}: field paths ({m.group(5)!r}) are not supported")
        return _format_value(variables[name], fmt, name)

    return _VARIABLE.sub(replace, sql)


def expand_macros(
    sql: str,
    *,
    time_from_ns: int,
    time_to_ns: int,
    interval_ms: int = 60_000,
    variables: Mapping[str, str | list[str]] | None = None,
) -> str:
    """Return `sql` as the Grafana ClickHouse plugin sends it to ClickHouse.

    Template variables are replaced first (as Grafana's browser side does), then the plugin's macros
    (as its backend does); the comment opening this section of the module names the sources followed.

    Parameters
    ----------
    sql
        A panel target's ``rawSql``.
    time_from_ns, time_to_ns
        The dashboard time range, UTC epoch ns (Grafana works in ms; the plugin's macros in whole seconds).
    interval_ms
        The query interval Grafana computed for the panel, in ms (``$__interval_s`` is at least 1).
    variables
        Template variable values by name: a string, or a list for a multi-value variable. The built-ins
        ``__from``, ``__to`` (epoch ms), ``__interval`` and ``__interval_ms`` are added unless given.

    Raises
    ------
    ValueError
        When a macro has the wrong number of arguments or an unclosed bracket, or a variable uses a
        format this function does not implement.

    Examples
    --------
    >>> s = 1_515_560_400 * 10**9
    >>> expand_macros("SELECT 1 FROM t WHERE run_id = '${run_id}' AND $__timeFilter(ts_event)",
    ...               time_from_ns=s, time_to_ns=s + 3600 * 10**9, variables={"run_id": "r1"})
    "SELECT 1 FROM t WHERE run_id = 'r1' AND ts_event >= toDateTime(1515560400) AND ts_event <= toDateTime(1515564000)"
    >>> expand_macros("INTERVAL $__interval_s second, $__toTime", time_from_ns=0, time_to_ns=s, interval_ms=300_000)
    'INTERVAL 300 second, toDateTime(1515560400)'
    """
    if time_to_ns < time_from_ns:
        raise ValueError(f"time range ends before it starts: from {time_from_ns!r} ns, to {time_to_ns!r} ns")
    builtins: dict[str, str | list[str]] = {
        "__from": str(_unix_ms(time_from_ns)), "__to": str(_unix_ms(time_to_ns)),
        "__interval": _format_interval(interval_ms), "__interval_ms": str(interval_ms),
    }
    sql = _interpolate_variables(sql, {**builtins, **(variables or {})})
    return _interpolate_macros(sql, _Query(time_from_ns, time_to_ns, interval_ms))


# ---------------------------------------------------------------------------------------------------
# Pushing to Grafana


@dataclass(frozen=True, slots=True)
class Pushed:
    """What Grafana answered for one uploaded dashboard."""

    uid: str
    title: str
    version: int | None
    url: str  # path of the dashboard in Grafana, e.g. "/d/headrace-run/headrace-run"
    status: str


def _safe_url(url: str) -> str:
    # the Grafana base URL without any user:password, for messages and logs
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def push(
    dashboard_dir: str | Path,
    url: str,
    token: str | None = None,
    *,
    folder_uid: str | None = None,
    timeout_s: float = 10.0,
) -> list[Pushed]:
    """Upload every dashboard in `dashboard_dir` to the Grafana at `url`, replacing any with the same uid.

    Each dashboard is sent as ``POST <url>/api/dashboards/db`` with ``{"dashboard": ..., "overwrite": true}``
    and ``Authorization: Bearer <token>``, through `grafana_client.GrafanaApi`.

    Parameters
    ----------
    dashboard_dir
        Folder of dashboard JSON files (see `load_dashboards`).
    url
        Grafana base URL, e.g. ``http://localhost:3000`` (a sub-path such as ``https://host/grafana`` works).
    token
        A Grafana service account token; default: the environment variable ``HEADRACE_GRAFANA_TOKEN``.
        It is never logged, stored, or put in an error message.
    folder_uid
        Grafana folder to put the dashboards in; default: the General folder.
    timeout_s
        Seconds to wait for each HTTP request.

    Returns
    -------
    list of Pushed
        Grafana's answer for each dashboard, in file name order.

    Raises
    ------
    DashboardError
        When no token is available, a dashboard file is unusable, or Grafana cannot be reached or refuses
        a dashboard (the message names the dashboard and Grafana's status, never the token).
    """
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaException

    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if not token:
        raise DashboardError(f"no Grafana API token: set the environment variable {TOKEN_ENV} "
                             "(a Grafana service account token with the Editor role)")
    safe = _safe_url(url)  # any user:password in `url` is dropped: the token authenticates
    parts = urlsplit(safe)
    # grafana-client joins "<path prefix>api" without a slash: give a sub-path its trailing slash
    prefix = parts.path.rstrip("/") + "/" if parts.path.strip("/") else ""
    base = urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))
    dashboards = load_dashboards(dashboard_dir)
    api = GrafanaApi.from_url(url=base, credential=token, timeout=timeout_s)
    out = []
    for dash in dashboards:
        body: dict[str, Any] = {"dashboard": {**dash, "id": None}, "overwrite": True,
                                "message": "pushed by headrace"}
        if folder_uid is not None:
            body["folderUid"] = folder_uid
        try:
            answer = api.dashboard.update_dashboard(body)
        except GrafanaException as e:
            raise DashboardError(f"grafana at {safe!r} refused dashboard {dash['uid']!r}: "
                                 f"status {e.status_code!r}: {e.message}") from e
        except OSError as e:  # connection refused, DNS, TLS: niquests errors are OSErrors
            raise DashboardError(f"cannot reach grafana at {safe!r} to push dashboard {dash['uid']!r}: "
                                 f"{type(e).__name__}") from e
        answer = answer if isinstance(answer, dict) else {}
        pushed = Pushed(uid=str(answer.get("uid", dash["uid"])), title=str(dash["title"]),
                        version=answer.get("version"), url=str(answer.get("url", "")),
                        status=str(answer.get("status", "")))
        logger.info("dashboard pushed uid=%s version=%s grafana=%s", pushed.uid, pushed.version, safe)
        out.append(pushed)
    return out
