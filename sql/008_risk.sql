-- The risk engine (docs/risk.md): per-bar reports, limit utilisation, pre-trade denials, trading-state changes,
-- Expected Shortfall scalings of targets, stress-scenario P&L and per-venue margin.
CREATE TABLE IF NOT EXISTS risk_reports
(
    run_id             String,
    event_id           String,
    account            LowCardinality(String),
    ts_event           DateTime64(9, 'UTC'),
    trading_state      LowCardinality(String),            -- ACTIVE | REDUCING | HALTED
    equity             Float64,
    gross              Float64,                           -- gross exposure / equity
    net                Float64,                           -- net exposure / equity
    alpha              Float64,                           -- confidence of VaR and ES
    samples            Int64,                             -- bars in the historical window
    var_historical     Float64,                           -- one-bar losses as fractions of equity (NaN: too few bars)
    es_historical      Float64,
    var_cornish_fisher Float64,
    es_cornish_fisher  Float64,
    lvar               Float64,                           -- historical VaR + spread cost + impact cost
    lvar_exogenous     Float64,
    lvar_endogenous    Float64,
    worst_stress       Float64,                           -- worst scenario P&L / equity at the last rebalance
    worst_scenario     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, ts_event, event_id);

CREATE TABLE IF NOT EXISTS risk_limits
(
    run_id      String,
    event_id    String,
    account     LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),
    name        LowCardinality(String),
    value       Float64,
    limit       Float64,
    utilisation Float64,                                  -- value / limit
    breached    Bool,
    action      String                                    -- what the breach did; '' within the limit
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, name, ts_event, event_id);

CREATE TABLE IF NOT EXISTS risk_denials
(
    run_id        String,
    event_id      String,
    account       LowCardinality(String),
    ts_event      DateTime64(9, 'UTC'),
    order_id      String,
    instrument    LowCardinality(String),
    side          LowCardinality(String),
    amount        Float64,
    amount_sent   Float64,                                -- 0 when denied; the reduce-only part when reduced
    notional      Float64,                                -- account currency
    trading_state LowCardinality(String),
    action        LowCardinality(String),                 -- denied | reduced
    codes         Array(String),
    actuals       Array(Float64),
    limits        Array(Float64),
    blocking      Array(Bool),
    reason        String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, ts_event, event_id);

CREATE TABLE IF NOT EXISTS trading_states
(
    run_id   String,
    event_id String,
    account  LowCardinality(String),
    ts_event DateTime64(9, 'UTC'),
    previous LowCardinality(String),
    state    LowCardinality(String),
    source   LowCardinality(String),                      -- operator | limit:es | limit:stress | margin
    reason   String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, ts_event, event_id);

CREATE TABLE IF NOT EXISTS risk_scalings
(
    run_id     String,
    event_id   String,
    account    LowCardinality(String),
    ts_event   DateTime64(9, 'UTC'),
    measure    LowCardinality(String),
    es_before  Float64,                                   -- ES of the targets as decided
    es_after   Float64,                                   -- ES of the scaled targets
    limit      Float64,
    scale      Float64,                                   -- every target weight was multiplied by this
    reason     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, ts_event, event_id);

CREATE TABLE IF NOT EXISTS stress_results
(
    run_id       String,
    event_id     String,
    account      LowCardinality(String),
    ts_event     DateTime64(9, 'UTC'),
    scenario     LowCardinality(String),
    kind         LowCardinality(String),
    pnl          Float64,                                 -- account currency, negative = loss
    pnl_fraction Float64,                                 -- / equity
    worst_key    String,
    detail       String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, scenario, ts_event, event_id);

CREATE TABLE IF NOT EXISTS margin_snapshots
(
    run_id             String,
    event_id           String,
    account            LowCardinality(String),
    venue              LowCardinality(String),
    ts_event           DateTime64(9, 'UTC'),
    wallet_balance     Float64,
    margin_balance     Float64,
    initial_margin     Float64,
    maintenance_margin Float64,
    margin_ratio       Float64,                           -- maintenance / margin balance; 1 = liquidation
    available          Float64,
    positions          Int64,
    min_distance       Float64,                           -- smallest distance to liquidation, fraction of mark
    instruments        Array(String),
    liquidation_prices Array(Float64),
    distances          Array(Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, venue, ts_event, event_id);
