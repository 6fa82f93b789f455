"""Typed, immutable event records: the one schema every package shares.

Conventions (see docs/architecture.md):

- time is integer UTC epoch nanoseconds (`ts_*` fields); ccxt milliseconds are converted at the edges;
- instruments are ``venue:symbol`` with ccxt unified symbols (``binance:BTC/USDT``);
- every written event has a deterministic `event_id`, a pure function of its inputs and never of the
  run id, so the same decision in two runs has the same id and a resumed run that writes a row again
  does not create a duplicate (ClickHouse dedupes on ``(run_id, event_id)``);
- tick-level data travels in columnar chunks (`TradeChunk`, `QuoteChunk`, `BarChunk`) of numpy arrays,
  one instrument each, because per-tick Python objects cost more than the whole budget per tick.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Side = Literal["buy", "sell"]
TargetStatus = Literal["ok", "fallback_previous"]
InstrumentState = Literal["stale", "live"]
OrderOutcome = Literal["expired", "skipped", "cancelled", "denied"]

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_YEAR = 365 * 24 * 3600 * NS_PER_S

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]

SIDE_BUY, SIDE_SELL, SIDE_UNKNOWN = 1, -1, 0


def stable_id(*parts: object) -> str:
    """Return a deterministic 128-bit hex id for `parts` (never uuid4, never a counter).

    Examples
    --------
    >>> stable_id("trade", "binance:BTC/USDT", 42) == stable_id("trade", "binance:BTC/USDT", 42)
    True
    >>> len(stable_id("x"))
    32
    """
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def split_instrument(instrument: str) -> tuple[str, str, str, str]:
    """Split ``venue:BASE/QUOTE[:SETTLE]`` into venue, symbol, base and quote.

    Examples
    --------
    >>> split_instrument("binance:BTC/USDT")
    ('binance', 'BTC/USDT', 'BTC', 'USDT')
    >>> split_instrument("binance:XRP/USDT:USDT")
    ('binance', 'XRP/USDT:USDT', 'XRP', 'USDT')
    """
    venue, _, symbol = instrument.partition(":")
    base, _, rest = symbol.partition("/")
    quote = rest.partition(":")[0]
    if not venue or not base or not quote:
        raise ValueError(f"instrument must look like 'venue:BASE/QUOTE', was {instrument!r}")
    return venue, symbol, base, quote


# ---------------------------------------------------------------------------------------------------
# Columnar market data: one instrument, one kind, rows in arrival order.


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where rows came from: `files[file_index[i]]`, data row `row[i]` (0-based, header excluded)."""

    files: tuple[str, ...]
    file_index: I32
    row: I64


@dataclass(frozen=True, slots=True, kw_only=True)
class TradeChunk:
    """Trades of one instrument: prices in quote currency, amounts in base units, side +1/-1/0."""

    instrument: str
    ts_event: I64
    ts_recv: I64
    price: F64
    amount: F64
    side: I8
    trade_id: npt.NDArray[np.str_] | None  # None when the venue gives no ids
    origin: Provenance

    def __len__(self) -> int:
        return len(self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteChunk:
    """Top-of-book updates of one instrument: best bid/ask prices and sizes.

    Quotes replayed from an order book also carry the book's top levels after each update: `bid_levels` and
    `ask_levels` are structured arrays, one element per row, with fields ``price`` and ``amount``, each of
    shape (depth,), best level first, padded with NaN where the book has fewer levels (so
    ``q.bid_levels["price"]`` is a (rows, depth) float array). None for other quote data.
    """

    instrument: str
    ts_event: I64
    ts_recv: I64
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64
    origin: Provenance
    bid_levels: npt.NDArray[np.void] | None = None
    ask_levels: npt.NDArray[np.void] | None = None

    def __len__(self) -> int:
        return len(self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class BarChunk:
    """Recorded OHLCV bars of one instrument; `ts_event` is the bar's close time, `ts_open` its open."""

    instrument: str
    ts_open: I64
    ts_event: I64
    ts_recv: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    origin: Provenance

    def __len__(self) -> int:
        return len(self.ts_event)


MarketChunk = TradeChunk | QuoteChunk | BarChunk


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkChunk:
    """Mark prices of one contract: the close of each mark-price candle, stamped at the candle's close."""

    instrument: str
    ts_event: I64  # the candle's close (when the mark price is known)
    ts_recv: I64
    price: F64
    origin: Provenance

    def __len__(self) -> int:
        return len(self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class FundingChunk:
    """Funding events of one perpetual contract: the rate paid by longs to shorts (per funding period) at `ts_event`."""

    instrument: str
    ts_event: I64  # the funding time
    ts_recv: I64
    rate: F64
    origin: Provenance

    def __len__(self) -> int:
        return len(self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Quarantined:
    """A market record that was rejected, with the reason and the record as it was read.

    `instrument` is empty and `ts_event` 0 when the record was too broken to tell.
    """

    instrument: str
    ts_event: int
    ts_recv: int
    source: str  # file path, or the feed name for live data
    row: int  # 0-based data row in `source`; -1 when not from a file
    reason: str
    raw: str  # the record as read, as JSON

    @property
    def event_id(self) -> str:
        return stable_id("quarantine", self.source, self.row, self.instrument, self.ts_event, self.reason)

    @staticmethod
    def raw_json(values: dict[str, object]) -> str:
        """Render raw values as JSON; non-finite floats become strings so the text stays valid JSON."""

        def clean(v: object) -> object:
            if isinstance(v, float) and not math.isfinite(v):
                return repr(v)
            if isinstance(v, np.generic):
                return clean(v.item())
            return v

        return json.dumps({k: clean(v) for k, v in values.items()}, sort_keys=True, default=str)


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketSlice:
    """What the replay source emits for one instrument and one slice of the merged stream.

    `watermark` promises that every record of the whole stream with event time <= watermark has been
    emitted by now (for every instrument), so downstream steps can close bars and align instruments
    without a wall clock. Chunks may be empty; `rejected` holds records that failed parsing. `marks` and
    `funding` (perpetual contracts) ride along with the contract's market data; the bars carry them.
    """

    instrument: str
    watermark: int
    trades: TradeChunk | None = None
    quotes: QuoteChunk | None = None
    bars: BarChunk | None = None
    rejected: tuple[Quarantined, ...] = ()
    marks: MarkChunk | None = None
    funding: FundingChunk | None = None


# ---------------------------------------------------------------------------------------------------
# Bars and what is derived from them: plain objects, one per bar.


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One closed OHLCV bar; `ts_event` is the close time (when the bar is known), `ts_open` the open.

    `bid`/`ask` are the last quote at or before the close when quotes were seen, else None; `bid_size`/
    `ask_size` the sizes of that quote. `bids`/`asks` are the top levels ``(price, amount)``, best first, of
    the last order-book state at or before the close when the data is an order book, else empty.
    `buy_volume`/`sell_volume` split the volume of trades whose aggressor side is known (None for recorded bars,
    quote-only bars and trades without sides).
    `mark_price` is the close of the last mark-price candle that closed at or before the bar's close (None before
    the first), `mark_ts` that candle's close time; `funding` the funding events ``(time, rate)`` whose time lies in
    (previous bar's close, this bar's close] (perpetual contracts replayed with their mark and funding files; bars
    built from ticks take what is stamped strictly before their close, see operators/bars/bar_builder.py).
    """

    instrument: str
    ts_open: int
    ts_event: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int  # number of trades in the bar; -1 when the recorded bar does not say
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    bids: tuple[tuple[float, float], ...] = ()
    asks: tuple[tuple[float, float], ...] = ()
    buy_volume: float | None = None  # bars built from trades with aggressor sides: volume bought, sold
    sell_volume: float | None = None
    mark_price: float | None = None
    mark_ts: int | None = None
    funding: tuple[tuple[int, float], ...] = ()

    @property
    def event_id(self) -> str:
        return stable_id("bar", self.instrument, self.ts_open, self.ts_event)

    @property
    def timeframe_ns(self) -> int:
        return self.ts_event - self.ts_open


@dataclass(frozen=True, slots=True, kw_only=True)
class BarBatch:
    """Closed bars of one instrument, in time order, and the instrument's watermark after them."""

    instrument: str
    watermark: int
    bars: tuple[Bar, ...]
    quarantined: tuple[int, ...] = ()  # stream positions (watermarks) where records were quarantined since the last


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    """Per-bar features of one instrument (log return, EWMA volatility per bar, lookback momentum)."""

    instrument: str
    ts_event: int
    close: float
    log_return: float | None  # ln(close / previous close); None on the first bar
    volatility: float | None  # EWMA std of log returns per bar; None until two returns
    momentum: float | None  # ln(close / close `lookback` bars ago); None until available

    @property
    def event_id(self) -> str:
        return stable_id("features", self.instrument, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureVector:
    """The model inputs of one instrument at one bar close, and why they may not be used.

    `values` holds only the features the data had at this bar (name, value); `flags` is empty when the
    vector is valid, else names why not (``warmup``, ``gap``, ``quarantine``). A model neither learns from
    nor trades on an invalid vector.
    """

    instrument: str
    ts_event: int
    values: tuple[tuple[str, float], ...]
    flags: tuple[str, ...] = ()
    close: float = math.nan  # the bar's close: the price the forward-return label is measured from

    @property
    def valid(self) -> bool:
        return not self.flags

    def as_dict(self) -> dict[str, float]:
        return dict(self.values)

    @property
    def event_id(self) -> str:
        return stable_id("feature_vector", self.instrument, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureBatch:
    """Bars of one instrument with their features, and the instrument's watermark after them."""

    instrument: str
    watermark: int
    bars: tuple[Bar, ...]
    features: tuple[Features, ...]
    quarantined: tuple[int, ...] = ()  # stream positions where records were quarantined before these bars


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """A strategy's score for one instrument at one bar time; positive means long."""

    instrument: str
    ts_event: int
    strategy: str
    score: float

    @property
    def event_id(self) -> str:
        return stable_id("signal", self.strategy, self.instrument, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A target portfolio weight for one instrument (fraction of account equity, signed)."""

    instrument: str
    ts_event: int
    weight: float
    status: TargetStatus
    volatility: float | None  # per-bar volatility the sizing used

    @property
    def event_id(self) -> str:
        return stable_id("target", self.instrument, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentStatus:
    """An instrument left the cross-section because its data stopped ("stale"), or came back ("live").

    `ts_event` is the processed bar time at which the change was seen; `last_bar_ts` the close time of the
    instrument's last bar at that moment (for "live", the bar that brought it back).
    """

    instrument: str
    ts_event: int
    status: InstrumentState
    last_bar_ts: int

    @property
    def event_id(self) -> str:
        return stable_id("instrument_status", self.instrument, self.ts_event, self.status)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrossSection:
    """Everything the account needs at one bar time: every bar closed at `ts_event`, and the decisions."""

    ts_event: int
    bars: tuple[Bar, ...]  # sorted by instrument
    signals: tuple[Signal, ...] = ()
    targets: tuple[Target, ...] = ()  # empty when this bar time is not a rebalance
    statuses: tuple[InstrumentStatus, ...] = ()  # instruments that went stale or came back at this time
    arbitrage: tuple[ArbSignal, ...] = ()  # cross-venue spreads confirmed or ended at this time (router on)
    portfolio: tuple[PortfolioRecord, ...] = ()  # the portfolio engine's records of this rebalance
    ml: tuple[MlRecord, ...] = ()  # the online models' predictions, outcomes, metrics, weights and drift


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """A market order decided at `ts_event`; `amount` in base units, > 0."""

    order_id: str
    account: str
    instrument: str
    ts_event: int
    side: Side
    amount: float
    reason: str
    target_weight: float
    parent_id: str = ""  # the routed parent order; empty for an order decided per instrument
    limit_price: float | None = None  # an IOC limit (routed children); None: a market order

    @property
    def event_id(self) -> str:
        return self.order_id


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStatus:
    """The end of an order that did not fill completely: "expired" (its instrument went stale, or the data
    ended while it was working), "skipped" (it could not be filled or routed when decided, e.g. no bar closes
    at the decision time with ``fill_on = "decision_close"``), "cancelled" (the unfilled rest of an IOC
    child) or "denied" (a parent order no venue may carry, e.g. no market metadata). `reason` says which,
    in words.
    """

    order_id: str
    account: str
    instrument: str
    ts_event: int
    status: OrderOutcome
    reason: str

    @property
    def event_id(self) -> str:
        return stable_id("order_status", self.order_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """An execution of an order; fee in the instrument's quote currency."""

    fill_id: str
    order_id: str
    account: str
    instrument: str
    ts_event: int
    side: Side
    price: float
    amount: float
    fee: float
    fee_currency: str
    liquidity: Literal["taker", "maker"]
    slippage_bps: float

    @property
    def event_id(self) -> str:
        return self.fill_id

    @property
    def notional(self) -> float:
        return self.price * self.amount


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """One instrument's position in an account at `ts_event`, marked to the last close.

    Money fields are in the instrument's quote currency except `value_account`, in the account's currency.
    `mark_ts` is the close time of the bar that gave the mark (0 before any); `stale` says the instrument's
    data has stopped (it left the cross-section), so the mark is its last known price.
    """

    account: str
    instrument: str
    ts_event: int
    amount: float  # base units, signed
    avg_price: float
    mark: float
    unrealized_pnl: float
    realized_pnl: float
    fees: float
    value_account: float
    mark_ts: int = 0
    stale: bool = False

    @property
    def event_id(self) -> str:
        return stable_id("position", self.account, self.instrument, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Equity:
    """An account's equity at one bar time, in the account currency."""

    account: str
    ts_event: int
    equity: float
    cash: float
    gross_exposure: float
    net_exposure: float
    fees: float  # cumulative
    traded: float  # cumulative notional traded, account currency
    currency: str = field(default="")

    @property
    def event_id(self) -> str:
        return stable_id("equity", self.account, self.ts_event)




@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingDecision:
    """One candidate venue instrument considered for a parent order, chosen or not, with the expected cost.

    Realised cost is in the fills of the child (``fills.order_id = child_id``); SQL compares the two.
    """

    parent_id: str
    account: str
    asset: str
    ts_event: int
    side: Side
    parent_amount: float  # base units the parent asked for
    instrument: str
    depth_source: str  # "book" | "quote" | "bar"
    best_price_account: float | None  # the best level net of fee, account currency per base unit
    depth_amount: float  # base units available inside the band
    chosen_amount: float  # 0 when not used
    expected_price: float | None  # quote currency
    child_id: str  # "" when not used
    reason: str  # "" when chosen, else why not

    @property
    def event_id(self) -> str:
        return stable_id("routing", self.parent_id, self.instrument)


ArbState = Literal["open", "closed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ArbSignal:
    """A cross-venue spread net of both legs' fees that persisted beyond the threshold ("open"), or its end.

    Buying `buy_instrument` at its ask and selling `sell_instrument` at its bid, both valued in the account
    currency at the market rate of each venue, would have earned `net_spread_bps` after fees.
    """

    asset: str
    ts_event: int
    status: ArbState
    buy_instrument: str
    sell_instrument: str
    net_spread_bps: float  # at this time (open: when it was confirmed; closed: the widest seen)
    gross_spread_bps: float
    opened_ts: int  # first time the spread exceeded the threshold

    @property
    def event_id(self) -> str:
        return stable_id("arbitrage", self.asset, self.buy_instrument, self.sell_instrument, self.opened_ts,
                         self.status)


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    """Cash of one currency on one venue, valued at the rate used for the account at that time."""

    account: str
    venue: str
    currency: str
    ts_event: int
    amount: float
    rate: float  # account currency per unit
    value_account: float

    @property
    def event_id(self) -> str:
        return stable_id("balance", self.account, self.venue, self.currency, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """Something an operator must look at: a venue that stays throttled, a reconciliation difference, a venue
    stopped, a model whose error drifted. `kind` is a short code (``throttled``, ``reconciliation``,
    ``venue_stopped``, ``solver_fallback``, ``model_drift``)."""

    account: str
    venue: str
    ts_event: int
    kind: str
    message: str

    @property
    def event_id(self) -> str:
        return stable_id("alert", self.account, self.venue, self.ts_event, self.kind, self.message)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationRecord:
    """One difference between the account's view of a venue and the venue's own, with both values (text)."""

    account: str
    venue: str
    ts_event: int
    kind: str  # balance | open_order | fill
    key: str  # currency, client order id or fill id
    local: str
    venue_value: str
    difference: str
    within_tolerance: bool
    action: str  # the venue's decision after this check: continue | stop

    @property
    def event_id(self) -> str:
        return stable_id("reconciliation", self.account, self.venue, self.ts_event, self.kind, self.key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rebalance:
    """One portfolio decision: the method, how the solve went, and the ex-ante risk of the targets.

    `ex_ante_vol` is the per-bar volatility of the target weights under the risk model (a fraction of equity);
    `horizon_bars` the bars until the next rebalance, so the forecast for that period is
    ``ex_ante_vol * sqrt(horizon_bars)``. `solve_ms` is measured wall time (covariance to weights): the one
    column that differs between two runs of the same replay.
    """

    ts_event: int
    method: str
    regime: str  # "" unless the method has regimes
    assets: int  # assets the optimiser held (with enough history)
    solver: str  # the solver that produced the weights ("" for closed-form methods or a fallback)
    status: str  # optimal | optimal_inaccurate | closed_form | infeasible | solver_error | ... | no_risk_model
    fallback: str  # none | second_solver | previous
    message: str
    solve_ms: float = field(compare=False)  # measured: equal rows of two runs may differ here
    ex_ante_vol: float
    ex_ante_vol_annual: float
    horizon_bars: int
    gross: float
    net: float
    turnover: float
    condition_number: float
    shrinkage: float

    @property
    def event_id(self) -> str:
        return stable_id("rebalance", self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskShare:
    """At a rebalance, one asset's or tier's weight and share of the portfolio's ex-ante variance.

    Shares sum to 1 over the assets (and over the tiers); `budget` is the tier's risk budget, NaN where none.
    """

    ts_event: int
    kind: Literal["asset", "tier"]
    name: str
    tier: str
    weight: float
    share: float
    budget: float

    @property
    def event_id(self) -> str:
        return stable_id("risk_share", self.kind, self.name, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """At a rebalance, the target portfolio's exposure to one factor (``Σ wᵢ βᵢ``) and the bounds it had."""

    ts_event: int
    factor: str
    exposure: float
    lower: float  # -inf / inf where unbounded
    upper: float

    @property
    def event_id(self) -> str:
        return stable_id("exposure", self.factor, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegimeSwitch:
    """The volatility regime changed at `ts_event`; `reason` names the values and the threshold crossed."""

    ts_event: int
    previous: str
    regime: str
    reason: str
    fast_vol: float
    slow_vol: float
    ratio: float

    @property
    def event_id(self) -> str:
        return stable_id("regime", self.ts_event, self.regime)


PortfolioRecord = Rebalance | RiskShare | Exposure | RegimeSwitch | Alert


# ---------------------------------------------------------------------------------------------------
# Online models (docs/ml.md)

MlPurpose = Literal["learn", "decide"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MlPrediction:
    """One prediction of a model, with everything needed to explain it.

    `purpose` is ``learn`` (made on a learning bar, scored when its label is known) or ``decide`` (made at a
    rebalance for the blend). `value` is P(up) for a classifier, the forward log return for a regressor;
    `score` the value on the rule signal's scale in [-1, 1] (decide only, else NaN). `version` counts the
    updates the model had learnt when it predicted. `names`/`inputs` are the feature vector (made at
    `feature_ts`); for a linear model `contributions` holds each input's term of the decision function and
    `intercept` its constant (empty / NaN for a forest).
    """

    model: str
    version: int
    instrument: str
    ts_event: int
    purpose: MlPurpose
    value: float
    score: float
    feature_ts: int
    names: tuple[str, ...]
    inputs: tuple[float, ...]
    contributions: tuple[float, ...] = ()
    intercept: float = math.nan

    @property
    def event_id(self) -> str:
        return stable_id("ml_prediction", self.model, self.instrument, self.ts_event, self.purpose)


@dataclass(frozen=True, slots=True, kw_only=True)
class MlOutcome:
    """A learning-bar prediction whose label became known at `ts_resolved`: the prequential pair.

    `label` is the realised forward log return over the horizon; `regime` the market's volatility regime
    at the prediction (``calm``, ``stressed``, ``warmup``).
    """

    model: str
    version: int
    instrument: str
    ts_event: int
    ts_resolved: int
    value: float
    label: float
    regime: str

    @property
    def event_id(self) -> str:
        return stable_id("ml_outcome", self.model, self.instrument, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class MlMetric:
    """Prequential scores of one model at `ts_event`, over all instruments (`instrument` ``""``) or one, and
    over every regime (`regime` ``""``) or one. Cumulative log loss, accuracy, MAE and hit rate; the
    information coefficient over the last `window_samples` pairs. NaN where the kind has no such score."""

    model: str
    ts_event: int
    instrument: str
    regime: str
    samples: int
    window_samples: int
    log_loss: float
    accuracy: float
    mae: float
    hit_rate: float
    ic: float
    drift_events: int

    @property
    def event_id(self) -> str:
        return stable_id("ml_metric", self.model, self.instrument, self.regime, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class MlSkill:
    """A score used or offered at a rebalance (`ts_event`), by a model or a rule factor, and the forward log
    return over the horizon that followed it (known at `ts_resolved`). `mode`: shadow | blended | rules."""

    name: str
    mode: str
    instrument: str
    ts_event: int
    ts_resolved: int
    score: float
    label: float

    @property
    def event_id(self) -> str:
        return stable_id("ml_skill", self.name, self.instrument, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class MlWeight:
    """The blend weight of a model changed from `previous` to `weight` at a rebalance, and why."""

    model: str
    ts_event: int
    previous: float
    weight: float
    reason: str
    model_ic: float
    rules_ic: float
    samples: int

    @property
    def event_id(self) -> str:
        return stable_id("ml_weight", self.model, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class MlDrift:
    """ADWIN saw the error of `model` change at `ts_event`; `policy` is what was done (none | reset | relearn)."""

    model: str
    ts_event: int
    policy: str
    version: int  # the model's updates when the drift was detected
    relearned: int  # labels the new model relearnt (relearn policy)
    detail: str

    @property
    def event_id(self) -> str:
        return stable_id("ml_drift", self.model, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class MlModelState:
    """A model's learnt state at the end of a run (`headrace ml export` reads it): `state` is the base64 of the
    pickled River pipelines, one per key (``""`` for a pooled model), with the updates each had learnt."""

    model: str
    ts_event: int
    kind: str
    algorithm: str
    pooled: bool
    horizon_bars: int
    updates: tuple[tuple[str, int], ...]
    features: tuple[str, ...]  # the feature names the model was trained on
    state: str = field(compare=False)  # the same model may pickle to other bytes after a resume

    @property
    def event_id(self) -> str:
        return stable_id("ml_model", self.model, self.ts_event)


# ---------------------------------------------------------------------------------------------------
# The risk engine (docs/risk.md): one account's measures, limits, denials, trading states, stress and margin.


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskReport:
    """The account's risk at one bar time, every measure a positive loss as a fraction of equity over one bar of
    the run's timeframe, at confidence `alpha`; NaN before `samples` reaches ``risk.min_bars``."""

    account: str
    ts_event: int
    trading_state: str  # ACTIVE | REDUCING | HALTED
    equity: float
    gross: float  # gross exposure / equity
    net: float  # net exposure / equity
    alpha: float
    samples: int  # bars of returns in the historical window
    var_historical: float
    es_historical: float
    var_cornish_fisher: float
    es_cornish_fisher: float
    lvar: float  # historical VaR + exogenous (spread) + endogenous (impact) liquidity cost
    lvar_exogenous: float
    lvar_endogenous: float
    worst_stress: float  # the worst scenario's P&L / equity at the last rebalance (<= 0; NaN before the first)
    worst_scenario: str

    @property
    def event_id(self) -> str:
        return stable_id("risk_report", self.account, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimit:
    """One limit's value against its bound at `ts_event`: written at rebalances, and whenever a limit is
    breached or comes back. `action` says what the breach did (``""``: none, within the limit)."""

    account: str
    ts_event: int
    name: str
    value: float
    limit: float
    utilisation: float  # value / limit
    breached: bool
    action: str

    @property
    def event_id(self) -> str:
        return stable_id("risk_limit", self.account, self.ts_event, self.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskDenial:
    """An order the pre-trade checks stopped or cut, with every violation found (code, actual, limit, blocking).
    `action` is "denied" (nothing was sent) or "reduced" (sent with `amount_sent` < `amount`)."""

    account: str
    ts_event: int
    order_id: str
    instrument: str
    side: str
    amount: float
    amount_sent: float
    notional: float  # account currency
    trading_state: str
    action: str
    codes: tuple[str, ...]
    actuals: tuple[float, ...]
    limits: tuple[float, ...]
    blocking: tuple[bool, ...]
    reason: str  # every violation in words

    @property
    def event_id(self) -> str:
        return stable_id("risk_denial", self.account, self.order_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class TradingStateChange:
    """The account's trading state changed: `source` is ``operator`` or the limit that moved it (``limit:es``,
    ``limit:stress``, ``margin``)."""

    account: str
    ts_event: int
    previous: str
    state: str
    source: str
    reason: str

    @property
    def event_id(self) -> str:
        return stable_id("trading_state", self.account, self.ts_event, self.previous, self.state, self.source,
                         self.reason)  # several operator commands may land at one time


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskScaling:
    """The Expected Shortfall limit scaled a rebalance's targets: every weight times `scale`."""

    account: str
    ts_event: int
    measure: str  # the ES the limit compares (historical | cornish_fisher | max)
    es_before: float
    es_after: float
    limit: float
    scale: float
    reason: str

    @property
    def event_id(self) -> str:
        return stable_id("risk_scaling", self.account, self.ts_event)


@dataclass(frozen=True, slots=True, kw_only=True)
class StressResultRow:
    """One stress scenario's P&L on the account's positions at `ts_event` (a rebalance, or on demand)."""

    account: str
    ts_event: int
    scenario: str
    kind: str
    pnl: float  # account currency, negative = loss
    pnl_fraction: float
    worst_key: str
    detail: str

    @property
    def event_id(self) -> str:
        return stable_id("stress", self.account, self.ts_event, self.scenario)


@dataclass(frozen=True, slots=True, kw_only=True)
class MarginSnapshot:
    """One venue's margin for derivative positions at `ts_event` (cross margin per venue, account currency)."""

    account: str
    venue: str
    ts_event: int
    wallet_balance: float
    margin_balance: float
    initial_margin: float
    maintenance_margin: float
    margin_ratio: float  # maintenance margin / margin balance; 1 = liquidation
    available: float
    positions: int
    min_distance: float  # the smallest distance to liquidation of a position, fraction of its mark (inf: none)
    instruments: tuple[str, ...] = ()
    liquidation_prices: tuple[float, ...] = ()  # NaN: none
    distances: tuple[float, ...] = ()

    @property
    def event_id(self) -> str:
        return stable_id("margin", self.account, self.venue, self.ts_event)


RiskRecord = RiskReport | RiskLimit | RiskDenial | TradingStateChange | RiskScaling | StressResultRow | MarginSnapshot


MlRecord = FeatureVector | MlPrediction | MlOutcome | MlMetric | MlSkill | MlWeight | MlDrift | MlModelState | Alert


WrittenEvent = (Bar | Features | Signal | Target | Order | Fill | Position | Equity | Quarantined | InstrumentStatus
                | OrderStatus | RoutingDecision | ArbSignal | Balance | Alert | ReconciliationRecord | Rebalance
                | RiskShare | Exposure | RegimeSwitch | FeatureVector | MlPrediction | MlOutcome | MlMetric | MlSkill
                | MlWeight | MlDrift | MlModelState | RiskReport | RiskLimit | RiskDenial | TradingStateChange
                | RiskScaling | StressResultRow | MarginSnapshot)
