"""The risk engine of one account: measures every bar, acts on limits, checks every order, records why.

The account step owns one `RiskEngine` and calls it in a fixed order on each cross-section (docs/risk.md):

1. `observe`: the prices of the keys that have a bar at this time (account currency), their relative spreads
   and bar volumes. A key is what the account sizes: an instrument, or an asset when the router spreads it over
   venues. Each call appends one row of simple returns to the historical window (0 for keys without a new price:
   their mark did not move);
2. `commands`: the operator commands due (replay: by their time; paper and live: as they arrive);
3. `assess`: the measures on the account's current positions (historical simulation: today's weights applied
   to every row of the window), the ES limit under the ``reduce`` action, and the report row;
4. on a rebalance, `scale` (the ES limit under the ``scale`` action: every target weight times
   ``limit / ES(targets)``, exact because both ES estimators are positively homogeneous), `check` for every
   order, and `stress` on the positions.

Every measure is a one-bar loss as a fraction of equity; the bar is the run's timeframe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from headrace.events import (
    Alert,
    RiskDenial,
    RiskLimit,
    RiskRecord,
    RiskReport,
    RiskScaling,
    StressResultRow,
    TradingStateChange,
)
from operators.base import check_version
from operators.risk.measures import Moments, cf_es_from, cf_var_from, historical_var_es
from operators.risk.pretrade import (
    OrderCheck,
    OrderRate,
    PreTradeLimits,
    StateChange,
    TradingState,
    TradingStates,
    Violation,
    check_order,
    reduce_only,
)
from operators.risk.stress import CashBalance, Scenario, StressPosition, StressResult, stress_pnl, worst

Action = Literal["halt", "reduce", "resume"]
_STATE_OF: dict[str, TradingState] = {"halt": "HALTED", "reduce": "REDUCING", "resume": "ACTIVE"}
RiskOut = RiskRecord | Alert
NAN = math.nan


def relative_spread(bid: float | None, ask: float | None) -> float | None:
    """(ask - bid) / mid of a quote, None when there is no sound quote (the spread `RiskEngine.observe` takes).

    >>> relative_spread(99.0, 101.0), relative_spread(None, 101.0), relative_spread(101.0, 99.0)
    (0.02, None, None)
    """
    if bid is None or ask is None or not 0 < bid <= ask:
        return None
    return (ask - bid) / ((ask + bid) / 2)


def _moments(pnl: np.ndarray) -> Moments:
    """Population mean, std, skewness and excess kurtosis of a finite series (as `measures.moments`, unchecked)."""
    n = pnl.size
    mu = float(pnl.sum()) / n
    d = pnl - mu
    d2 = d * d
    m2 = float(d2.sum()) / n
    if m2 * m2 <= 0.0:  # constant, or so nearly that m2^2 underflows (measures._from_central)
        return Moments(mu, math.sqrt(max(m2, 0.0)), 0.0, 0.0)
    return Moments(mu, math.sqrt(m2), float(d2 @ d) / n / m2**1.5, float(d2 @ d2) / n / (m2 * m2) - 3.0)


@dataclass(frozen=True, slots=True)
class Command:
    """An operator command: from `at` (ns, event time; 0: at once, paper and live), the operator's trading state is
    `action`'s."""

    at: int
    action: Action
    reason: str
    issued: int = 0  # when the operator gave it (ns); paper and live apply a command once, by this


@dataclass(frozen=True, slots=True)
class RiskSettings:
    """The risk engine's settings (``[risk]``, docs/risk.md); limits of 0 are off."""

    account: str
    alpha: float = 0.975
    window: int = 500
    min_bars: int = 50
    report_every: int = 1
    es_limit: float = 0.0
    es_measure: Literal["historical", "cornish_fisher", "max"] = "max"
    es_action: Literal["scale", "reduce"] = "scale"
    es_resume: float = 0.8
    spread_k: float = 3.0
    impact_coefficient: float = 1.0
    spread_halflife: float = 48.0
    limits: PreTradeLimits = field(default_factory=PreTradeLimits)
    stress_limit: float = 0.0
    stress_action: Literal["alert", "reduce"] = "alert"
    scenarios: tuple[Scenario, ...] = ()
    commands: tuple[Command, ...] = ()  # replay: applied when the first cross-section at or after `at` comes
    half_spreads: tuple[tuple[str, float], ...] = ()  # per venue, the configured half spread (fraction)


@dataclass(frozen=True, slots=True)
class Holding:
    """One position as the risk engine sees it: its key, venue, asset, quote and signed value (account currency)."""

    key: str
    venue: str
    asset: str
    quote: str
    value: float


@dataclass(frozen=True, slots=True)
class Book:
    """The account at one time: equity and every non-zero position (account currency), and cash per venue."""

    equity: float
    holdings: tuple[Holding, ...]
    cash: tuple[tuple[str, str, float], ...] = ()  # venue, currency, value in the account currency

    def weights(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if not self.equity > 0:
            return out
        for h in self.holdings:
            out[h.key] = out.get(h.key, 0.0) + h.value / self.equity
        return out


@dataclass(frozen=True, slots=True)
class Measures:
    samples: int
    var_historical: float
    es_historical: float
    var_cornish_fisher: float
    es_cornish_fisher: float
    lvar: float
    lvar_exogenous: float
    lvar_endogenous: float

    def es(self, which: str) -> float:
        if which == "historical":
            return self.es_historical
        if which == "cornish_fisher":
            return self.es_cornish_fisher
        return max(self.es_historical, self.es_cornish_fisher)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What may be sent of one order: `amount` (0: nothing) and the denial record, if any."""

    amount: float
    denial: RiskDenial | None


@dataclass(frozen=True, slots=True)
class RiskSnap:
    version: int
    keys: tuple[str, ...]
    rows: bytes  # the ring buffer's filled rows as they lie (float64 C order, samples x keys)
    samples: int
    pos: int  # the ring buffer's next row
    sums: tuple[bytes, bytes, int]  # the running column sums of returns and squares, updates since the last re-sum
    prices: tuple[tuple[str, float], ...]
    spreads: tuple[tuple[str, float, float], ...]  # key, EWMA mean, EWMA variance of the relative spread
    volumes: tuple[tuple[str, float], ...]
    wanted: tuple[tuple[str, str], ...]
    next_command: int
    last_issued: int
    order_times: tuple[int, ...]
    bars: int
    breached: tuple[str, ...]
    worst_stress: tuple[float, str]
    last_measures: tuple[float, ...]


SNAP_VERSION = 1


class RiskEngine:
    """Measures, limits, pre-trade checks and trading states of one account (see the module docstring)."""

    def __init__(self, settings: RiskSettings, keys: Sequence[str],
                 inbox: Callable[[int], list[Command]] | None = None) -> None:
        self.s = settings
        self.keys = tuple(sorted(set(keys)))
        self._index = {k: i for i, k in enumerate(self.keys)}
        self.inbox = inbox
        self._rows = np.zeros((settings.window, len(self.keys)), dtype=np.float64)
        self._sum1 = np.zeros(len(self.keys))  # running sums of each column's returns and squares (volatilities)
        self._sum2 = np.zeros(len(self.keys))
        self._since_resum = 0
        self._pos = 0
        self._samples = 0
        k = len(self.keys)
        self._price = np.full(k, np.nan)  # each key's last price (NaN: none yet)
        self._sp_mean = np.full(k, np.nan)  # EWMA mean and variance of the relative spread (NaN: never quoted)
        self._sp_var = np.zeros(k)
        self._volume = np.full(k, np.nan)  # EWMA of the bar volume, account currency (NaN: none yet)
        self._states = TradingStates()
        self._next_command = 0
        self._rate = OrderRate(settings.limits.window_ns)
        self._bars = 0
        self._breached: set[str] = set()
        self._worst: tuple[float, str] = (NAN, "")
        self._acted: dict[str, int] = {}  # limit name -> time of its last breach or release row (not a snapshot's)
        self._last = Measures(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
        self._half = dict(settings.half_spreads)
        # the half spread of a key never quoted: its venue's configured one (an asset of the router: the widest)
        widest = max(self._half.values(), default=0.0)
        self._half_key = np.array([self._half.get(k.partition(":")[0], widest) if ":" in k else widest
                                   for k in self.keys], dtype=np.float64)
        self._cost = self._half_key.copy()  # each key's spread cost per unit of |weight| (LVaR's exogenous term)
        self._lam = 1.0 - 0.5 ** (1.0 / settings.spread_halflife)
        self._commands = tuple(sorted(settings.commands, key=lambda c: c.at))
        self._last_issued = 0

    # -- inputs ---------------------------------------------------------------------------------

    @property
    def state(self) -> TradingState:
        return self._states.state

    @property
    def measures(self) -> Measures:
        """The measures of the last `assess`."""
        return self._last

    def observe(self, prices: Mapping[str, float], spreads: Mapping[str, float] | None = None,
                volumes: Mapping[str, float] | None = None) -> None:
        """Append one row of returns: `prices` (account currency) of the keys with a bar now; `spreads` their
        relative spreads (ask - bid) / mid where quoted; `volumes` their bar volumes in the account currency."""
        row = np.zeros(len(self.keys), dtype=np.float64)
        if prices:
            i, p = self._arrays(prices)
            ok = (p > 0) & np.isfinite(p)
            i, p = i[ok], p[ok]
            prev = self._price[i]
            seen = ~np.isnan(prev)
            row[i[seen]] = p[seen] / prev[seen] - 1.0
            self._price[i] = p
        if self._samples == self.s.window:  # the row that leaves the window leaves the running sums
            old = self._rows[self._pos]
            self._sum1 -= old
            self._sum2 -= old * old
        self._rows[self._pos] = row
        self._sum1 += row
        self._sum2 += row * row
        self._pos = (self._pos + 1) % self.s.window
        self._samples = min(self._samples + 1, self.s.window)
        self._since_resum += 1
        if self._since_resum >= self.s.window:  # exactly again from the window, so rounding never drifts
            filled = self._rows[:self._samples]
            self._sum1, self._sum2 = filled.sum(axis=0), (filled * filled).sum(axis=0)
            self._since_resum = 0
        lam = self._lam
        if spreads:
            i, x = self._arrays(spreads)
            ok = (x >= 0) & np.isfinite(x)
            i, x = i[ok], x[ok]
            m = self._sp_mean[i]
            m = np.where(np.isnan(m), x, m)
            v = np.where(np.isnan(self._sp_mean[i]), 0.0, self._sp_var[i])
            d = x - m
            self._sp_mean[i] = m + lam * d
            self._sp_var[i] = (1 - lam) * (v + lam * d * d)
            self._cost[i] = 0.5 * (self._sp_mean[i] + self.s.spread_k * np.sqrt(np.maximum(self._sp_var[i], 0.0)))
        if volumes:
            i, x = self._arrays(volumes)
            ok = (x >= 0) & np.isfinite(x)
            i, x = i[ok], x[ok]
            prev = self._volume[i]
            self._volume[i] = np.where(np.isnan(prev), x, prev + lam * (x - prev))

    def _arrays(self, values: Mapping[str, float]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The known keys of `values` as column indices, and their values."""
        n = len(values)
        idx = np.fromiter((self._index.get(k, -1) for k in values), dtype=np.intp, count=n)
        x = np.fromiter(values.values(), dtype=np.float64, count=n)
        known = idx >= 0
        return idx[known], x[known]

    def _held(self, weights: Mapping[str, float]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]] | None:
        """The window's columns of the non-zero `weights` and those weights (None: nothing held)."""
        held = [(self._index[k], w) for k, w in weights.items() if w != 0 and k in self._index]
        if not held:
            return None
        cols = np.fromiter((i for i, _ in held), dtype=np.intp, count=len(held))
        return cols, np.fromiter((w for _, w in held), dtype=np.float64, count=len(held))

    def _window(self) -> npt.NDArray[np.float64]:
        return self._rows[:self._samples] if self._samples < self.s.window else self._rows

    def _pnl_of(self, cols: npt.NDArray[np.intp], ws: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The held weights' P&L in every row of the window (row order does not matter to any measure)."""
        dense = np.zeros(len(self.keys))
        dense[cols] = ws
        return self._window() @ dense  # the held columns only would copy the window: the zeros cost less

    def _pnl(self, weights: Mapping[str, float]) -> npt.NDArray[np.float64] | None:
        held = self._held(weights)
        return None if held is None else self._pnl_of(*held)

    def _es_of(self, weights: Mapping[str, float]) -> tuple[float, float, float]:
        """ES of `weights`: historical, Cornish-Fisher and the one the limit compares."""
        pnl = self._pnl(weights)
        if pnl is None:
            return 0.0, 0.0, 0.0
        h = historical_var_es(pnl, self.s.alpha)[1]
        c = cf_es_from(_moments(pnl), self.s.alpha)
        chosen = h if self.s.es_measure == "historical" else c if self.s.es_measure == "cornish_fisher" else max(h, c)
        return h, c, chosen

    def vol(self, key: str) -> float:
        """The key's return volatility over the window (population, from the running sums)."""
        i = self._index.get(key)
        if i is None or self._samples < 2:
            return 0.0
        return float(self._vols(np.array([i], dtype=np.intp))[0])

    def _vols(self, cols: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        n = self._samples
        mean = self._sum1[cols] / n
        return np.sqrt(np.maximum(self._sum2[cols] / n - mean * mean, 0.0))

    def half_spread(self, key: str, venue: str) -> float:
        i = self._index.get(key)
        m = self._sp_mean[i] if i is not None else math.nan
        return float(m) / 2 if m == m else self._half.get(venue, 0.0)

    # -- commands and states --------------------------------------------------------------------

    def begin(self, ts: int, prices: Mapping[str, float], spreads: Mapping[str, float],
              volumes: Mapping[str, float]) -> tuple[list[RiskOut], bool]:
        """Steps 1 and 2 of a cross-section (`observe`, then `commands`): the records, and whether trading has just
        halted (the account then cancels its working orders)."""
        self.observe(prices, spreads, volumes)
        before = self.state
        out = self.commands(ts)
        return out, self.state == "HALTED" and before != "HALTED"

    def commands(self, ts: int) -> list[RiskOut]:
        """Apply the operator commands due at `ts`; return the state changes they caused."""
        due: list[Command] = []
        while self._next_command < len(self._commands) and self._commands[self._next_command].at <= ts:
            due.append(self._commands[self._next_command])
            self._next_command += 1
        if self.inbox is not None:  # paper and live: what the operator gave since the last command applied
            new = self.inbox(self._last_issued)
            if new:
                self._last_issued = max(c.issued for c in new)
            due += new
        out: list[RiskOut] = []
        for c in due:
            out += self._change(self._states.want(ts, "operator", _STATE_OF[c.action], f"operator: {c.reason}"))
        return out

    def _change(self, ch: StateChange | None) -> list[RiskOut]:
        if ch is None:
            return []
        return [TradingStateChange(account=self.s.account, ts_event=ch.ts, previous=ch.previous, state=ch.state,
                                   source=ch.source, reason=ch.reason),
                Alert(account=self.s.account, venue="", ts_event=ch.ts, kind="trading_state",
                      message=f"trading state {ch.previous} -> {ch.state} ({ch.source}): {ch.reason}")]

    def want(self, ts: int, source: str, state: TradingState, reason: str) -> list[RiskOut]:
        """A limit (or the margin monitor) sets the state it wants."""
        return self._change(self._states.want(ts, source, state, reason))

    # -- measures and the ES limit --------------------------------------------------------------

    def assess(self, ts: int, book: Book) -> list[RiskOut]:
        """Measure the current positions; act on the ES limit under ``reduce``; the report row."""
        self._bars += 1
        s = self.s
        weights = book.weights()
        out: list[RiskOut] = []
        if self._samples < s.min_bars:
            m = Measures(self._samples, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
        else:
            m = self._measure(weights, book)
            if s.es_limit > 0:
                out += self._es_limit(ts, m.es(s.es_measure))
        self._last = m
        if (self._bars - 1) % s.report_every == 0:
            gross = sum(abs(w) for w in weights.values())
            out.append(RiskReport(
                account=s.account, ts_event=ts, trading_state=self.state, equity=book.equity, gross=gross,
                net=sum(weights.values()), alpha=s.alpha, samples=m.samples, var_historical=m.var_historical,
                es_historical=m.es_historical, var_cornish_fisher=m.var_cornish_fisher,
                es_cornish_fisher=m.es_cornish_fisher, lvar=m.lvar, lvar_exogenous=m.lvar_exogenous,
                lvar_endogenous=m.lvar_endogenous, worst_stress=self._worst[0], worst_scenario=self._worst[1]))
        return out

    def _measure(self, weights: Mapping[str, float], book: Book) -> Measures:
        n = self._samples
        held = self._held(weights)
        if held is None:
            return Measures(n, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        cols, ws = held
        pnl = self._pnl_of(cols, ws)
        a = self.s.alpha
        var_h, es_h = historical_var_es(pnl, a)
        mo = _moments(pnl)
        var_c, es_c = cf_var_from(mo, a), cf_es_from(mo, a)
        size = np.abs(ws)
        exo = float(size @ self._cost[cols])
        endo = 0.0
        volume = self._volume[cols]
        traded = volume > 0  # NaN compares False: no volume seen, no impact term
        if self.s.impact_coefficient > 0 and book.equity > 0 and traded.any():
            vols = self._vols(cols[traded])
            q = size[traded]
            endo = float(self.s.impact_coefficient * np.sum(vols * np.sqrt(q / (volume[traded] / book.equity)) * q))
        return Measures(n, var_h, es_h, var_c, es_c, var_h + exo + endo, exo, endo)

    def _limit_row(self, ts: int, name: str, value: float, limit: float, breached: bool, action: str) -> RiskLimit:
        if action:
            self._acted[name] = ts
        return RiskLimit(account=self.s.account, ts_event=ts, name=name, value=value, limit=limit,
                         utilisation=value / limit if limit > 0 else NAN, breached=breached, action=action)

    def _es_limit(self, ts: int, es: float) -> list[RiskOut]:
        s = self.s
        u = es / s.es_limit
        out: list[RiskOut] = []
        if u > 1 and "es" not in self._breached:
            self._breached.add("es")
            action = ("REDUCING until ES <= " f"{s.es_resume:g} of the limit" if s.es_action == "reduce"
                      else "targets scaled at the next rebalance")
            out.append(self._limit_row(ts, "es", es, s.es_limit, True, action))
            out.append(Alert(account=s.account, venue="", ts_event=ts, kind="risk_limit",
                             message=f"ES {es:.4g} above its limit {s.es_limit:.4g} ({s.es_measure}): {action}"))
            if s.es_action == "reduce":
                out += self.want(ts, "limit:es", "REDUCING", f"ES {es:.4g} > limit {s.es_limit:.4g}")
        elif "es" in self._breached and u <= (s.es_resume if s.es_action == "reduce" else 1.0):
            self._breached.discard("es")
            out.append(self._limit_row(ts, "es", es, s.es_limit, False, "back within the limit"))
            if s.es_action == "reduce":
                out += self.want(ts, "limit:es", "ACTIVE", f"ES {es:.4g} <= {s.es_resume:g} x limit {s.es_limit:.4g}")
        return out

    def scale(self, ts: int, weights: Mapping[str, float]) -> tuple[float, list[RiskOut]]:
        """The factor the ES limit (``scale`` action) puts on a rebalance's target `weights`, and its record."""
        s = self.s
        if s.es_limit <= 0 or s.es_action != "scale" or self._samples < s.min_bars:
            return 1.0, []
        h, c, es = self._es_of(weights)
        if es <= s.es_limit or es <= 0:
            return 1.0, []
        k = s.es_limit / es
        *_, after = self._es_of({key: w * k for key, w in weights.items()})
        reason = (f"ES of the targets {es:.4g} ({s.es_measure}: historical {h:.4g}, Cornish-Fisher {c:.4g}) above "
                  f"the limit {s.es_limit:.4g}: every weight x {k:.4f}")
        return k, [RiskScaling(account=s.account, ts_event=ts, measure=s.es_measure, es_before=es, es_after=after,
                               limit=s.es_limit, scale=k, reason=reason),
                   self._limit_row(ts, "es_targets", es, s.es_limit, True, f"targets scaled x {k:.4f}")]

    # -- orders ---------------------------------------------------------------------------------

    def check(self, ts: int, order_id: str, side: str, amount: float, position: float,
              make: Callable[[float], OrderCheck]) -> Verdict:
        """The pre-trade verdict on one order of `amount` (> 0, base units) on `side`; `position` is the
        instrument's signed position in base units including working orders, and `make(amount)` builds the
        order's check values for a given amount."""
        state = self.state
        sign = 1.0 if side == "buy" else -1.0
        send = amount
        notes: list[Violation] = []
        if state == "HALTED":
            v = [Violation("halted", 1.0, 0.0)]
            return self._deny(ts, order_id, side, amount, 0.0, make(amount), v)
        if state == "REDUCING":
            send = reduce_only(amount, sign, position)
            if send <= 0:
                return self._deny(ts, order_id, side, amount, 0.0, make(amount),
                                  [Violation("reducing", abs(position + sign * amount), abs(position))])
            if send < amount:
                notes.append(Violation("reduce_only", amount, send, blocking=False))
        oc = make(send)
        violations = check_order(oc, self.s.limits, self._rate.count(ts))
        if any(v.blocking for v in violations):
            return self._deny(ts, order_id, side, amount, 0.0, oc, notes + violations)
        self._rate.add(ts)
        if notes or violations:
            return Verdict(send, self._denial(ts, order_id, side, amount, send, oc, notes + violations,
                                              "reduced" if send < amount else "allowed"))
        return Verdict(send, None)

    def _deny(self, ts: int, order_id: str, side: str, amount: float, sent: float, oc: OrderCheck,
              violations: list[Violation]) -> Verdict:
        return Verdict(0.0, self._denial(ts, order_id, side, amount, sent, oc, violations, "denied"))

    def _denial(self, ts: int, order_id: str, side: str, amount: float, sent: float, oc: OrderCheck,
                violations: list[Violation], action: str) -> RiskDenial:
        return RiskDenial(account=self.s.account, ts_event=ts, order_id=order_id, instrument=oc.instrument, side=side,
                          amount=amount, amount_sent=sent, notional=oc.notional, trading_state=self.state,
                          action=action, codes=tuple(v.code for v in violations),
                          actuals=tuple(v.actual for v in violations), limits=tuple(v.limit for v in violations),
                          blocking=tuple(v.blocking for v in violations),
                          reason="; ".join(v.text() for v in violations))

    # -- stress and limit rows at a rebalance ---------------------------------------------------

    def betas(self, keys: Sequence[str]) -> dict[str, float]:
        """Each key's beta to the market factor: the equal-weighted return of the keys priced so far."""
        seen = np.flatnonzero(~np.isnan(self._price))
        if self._samples < 2 or not seen.size:
            return {k: 1.0 for k in keys}
        rows = self._window()
        mkt = rows[:, seen].mean(axis=1)
        var = float(mkt.var())
        known = [(k, self._index[k]) for k in keys if k in self._index]
        out = {k: 1.0 for k in keys}
        if var > 0 and known:
            cols = np.fromiter((i for _, i in known), dtype=np.intp, count=len(known))
            sub = rows[:, cols]
            cov = (sub - sub.mean(axis=0)).T @ (mkt - mkt.mean()) / len(mkt)
            out.update({k: float(c) / var for (k, _), c in zip(known, cov.tolist(), strict=True)})
        return out

    def stress(self, ts: int, book: Book, currency: str) -> tuple[list[StressResult], list[RiskOut]]:
        """Every scenario's P&L on `book`, the worst against the stress limit, and their records."""
        s = self.s
        if not s.scenarios:
            return [], []
        keys = sorted({h.key for h in book.holdings})
        betas = self.betas(keys)
        positions = [StressPosition(key=h.key, venue=h.venue, asset=h.asset, quote=h.quote, value=h.value,
                                    beta=betas.get(h.key, 1.0), vol=self.vol(h.key),
                                    half_spread=self.half_spread(h.key, h.venue)) for h in book.holdings]
        cash = [CashBalance(venue=v, currency=c, value=x) for v, c, x in book.cash]
        results = stress_pnl(positions, cash, book.equity, s.scenarios, currency)
        out: list[RiskOut] = [StressResultRow(account=s.account, ts_event=ts, scenario=r.scenario, kind=r.kind,
                                              pnl=r.pnl, pnl_fraction=r.pnl_fraction, worst_key=r.worst_key,
                                              detail=r.detail) for r in results]
        w = worst(results)
        if w is None:
            return results, out
        self._worst = (w.pnl_fraction, w.scenario)
        if s.stress_limit > 0:
            loss = max(0.0, -w.pnl_fraction)
            if loss > s.stress_limit and "stress" not in self._breached:
                self._breached.add("stress")
                act = "REDUCING" if s.stress_action == "reduce" else "alert"
                out.append(self._limit_row(ts, "stress", loss, s.stress_limit, True, act))
                out.append(Alert(account=s.account, venue="", ts_event=ts, kind="risk_limit",
                                 message=f"worst stress scenario {w.scenario} loses {loss:.4g} of equity, above the "
                                         f"limit {s.stress_limit:.4g}"))
                if s.stress_action == "reduce":
                    out += self.want(ts, "limit:stress", "REDUCING", f"{w.scenario} loses {loss:.4g} > "
                                                                     f"{s.stress_limit:.4g}")
            elif loss <= s.stress_limit * s.es_resume and "stress" in self._breached:  # the same resume band
                self._breached.discard("stress")
                out.append(self._limit_row(ts, "stress", loss, s.stress_limit, False, "back within the limit"))
                if s.stress_action == "reduce":
                    out += self.want(ts, "limit:stress", "ACTIVE", f"worst scenario loses {loss:.4g}")
        return results, out

    def limit_rows(self, ts: int, book: Book) -> list[RiskOut]:
        """Every limit's value, bound and utilisation now (written at rebalances)."""
        s, lim = self.s, self.s.limits
        eq = book.equity if book.equity > 0 else NAN
        weights = book.weights()
        assets: dict[str, float] = {}
        for h in book.holdings:
            assets[h.asset] = assets.get(h.asset, 0.0) + h.value
        rows = [("es", self._last.es(s.es_measure), s.es_limit),
                ("gross", sum(abs(w) for w in weights.values()), lim.max_gross),
                ("net", abs(sum(weights.values())), lim.max_net),
                ("max_position_fraction", max((abs(h.value) / eq for h in book.holdings), default=0.0),
                 lim.max_position_fraction),
                ("max_asset_fraction", max((abs(v) / eq for v in assets.values()), default=0.0),
                 lim.max_asset_fraction),
                ("stress", max(0.0, -self._worst[0]) if self._worst[0] == self._worst[0] else NAN, s.stress_limit),
                ("order_rate", float(self._rate.count(ts)), float(lim.max_orders))]
        # a limit that was breached or released at this time has its row already (same event id: one row per time)
        return [self._limit_row(ts, n, v, x, v > x, "") for n, v, x in rows
                if x > 0 and v == v and self._acted.get(n) != ts]

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> RiskSnap:
        m = self._last
        return RiskSnap(
            version=SNAP_VERSION, keys=self.keys, rows=np.ascontiguousarray(self._rows[:self._samples]).tobytes(),
            samples=self._samples, pos=self._pos, sums=(self._sum1.tobytes(), self._sum2.tobytes(), self._since_resum),
            prices=tuple((k, float(self._price[i])) for i, k in enumerate(self.keys)
                         if self._price[i] == self._price[i]),
            spreads=tuple((k, float(self._sp_mean[i]), float(self._sp_var[i])) for i, k in enumerate(self.keys)
                    if self._sp_mean[i] == self._sp_mean[i]),
            volumes=tuple((k, float(self._volume[i])) for i, k in enumerate(self.keys)
                    if self._volume[i] == self._volume[i]), wanted=self._states.snapshot(),
            next_command=self._next_command, last_issued=self._last_issued,
            order_times=self._rate.snapshot(), bars=self._bars,
            breached=tuple(sorted(self._breached)), worst_stress=self._worst,
            last_measures=(m.samples, m.var_historical, m.es_historical, m.var_cornish_fisher, m.es_cornish_fisher,
                           m.lvar, m.lvar_exogenous, m.lvar_endogenous))

    @classmethod
    def restore(cls, settings: RiskSettings, keys: Sequence[str], snap: RiskSnap,
                inbox: Callable[[int], list[Command]] | None = None) -> RiskEngine:
        check_version(snap, SNAP_VERSION)
        core = cls(settings, keys, inbox)
        if snap.keys != core.keys:
            raise ValueError(f"risk snapshot keys {len(snap.keys)} differ from the run's {len(core.keys)}")
        rows = np.frombuffer(snap.rows, dtype=np.float64).reshape(snap.samples, len(core.keys))
        core._rows[:snap.samples] = rows
        core._samples = snap.samples
        core._pos = snap.pos
        core._sum1 = np.frombuffer(snap.sums[0], dtype=np.float64).copy()
        core._sum2 = np.frombuffer(snap.sums[1], dtype=np.float64).copy()
        core._since_resum = snap.sums[2]
        ix = core._index
        for k, p in snap.prices:
            core._price[ix[k]] = p
        for k, a, b in snap.spreads:
            core._sp_mean[ix[k]], core._sp_var[ix[k]] = a, b
            core._cost[ix[k]] = 0.5 * (a + settings.spread_k * math.sqrt(max(b, 0.0)))
        for k, v in snap.volumes:
            core._volume[ix[k]] = v
        core._states = TradingStates(tuple((k, v) for k, v in snap.wanted))  # type: ignore[misc]
        core._next_command = snap.next_command
        core._last_issued = snap.last_issued
        core._rate = OrderRate(settings.limits.window_ns, snap.order_times)
        core._bars = snap.bars
        core._breached = set(snap.breached)
        core._worst = snap.worst_stress
        lm = snap.last_measures
        core._last = Measures(int(lm[0]), *lm[1:])
        return core
