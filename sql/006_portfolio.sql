-- The portfolio engine: one row per rebalance, risk shares per asset and tier, factor exposures, regime changes,
-- and the forecast-against-outcome view (docs/portfolio.md).
CREATE TABLE IF NOT EXISTS rebalances
(
    run_id             String,
    event_id           String,
    ts_event           DateTime64(9, 'UTC'),
    method             LowCardinality(String),    -- vol_target | mean_variance | tier_risk_parity | regime_tiers
    regime             LowCardinality(String),    -- calm | stressed ('' unless regime_tiers)
    assets             Int64,                     -- assets the optimiser held
    solver             LowCardinality(String),    -- solver that produced the weights ('' closed form or fallback)
    status             LowCardinality(String),    -- optimal | closed_form | infeasible | solver_error | ...
    fallback           LowCardinality(String),    -- none | second_solver | previous
    message            String,                    -- why a fallback was taken
    solve_ms           Float64,                   -- wall time, covariance to weights (differs run to run)
    ex_ante_vol        Float64,                   -- per-bar volatility of the targets, fraction of equity
    ex_ante_vol_annual Float64,
    horizon_bars       Int64,                     -- bars until the next rebalance
    gross              Float64,
    net                Float64,
    turnover           Float64,                   -- sum |target - previous target|
    condition_number   Float64,                   -- of the covariance the optimiser used
    shrinkage          Float64                    -- shrinkage intensity applied
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, ts_event, event_id);

CREATE TABLE IF NOT EXISTS risk_contributions
(
    run_id    String,
    event_id  String,
    ts_event  DateTime64(9, 'UTC'),
    kind      LowCardinality(String),             -- asset | tier
    name      LowCardinality(String),             -- the asset (or instrument) or the tier
    tier      LowCardinality(String),
    weight    Float64,                            -- target weight (tier: sum over its assets)
    share     Float64,                            -- share of the ex-ante variance, sums to 1 per kind
    budget    Float64                             -- tier risk budget; NaN where none
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, kind, name, ts_event, event_id);

CREATE TABLE IF NOT EXISTS factor_exposures
(
    run_id    String,
    event_id  String,
    ts_event  DateTime64(9, 'UTC'),
    factor    LowCardinality(String),             -- market | tier:NAME | pcK
    exposure  Float64,                            -- sum of weight x beta
    lower     Float64,                            -- bound in the optimiser (-inf / inf: none)
    upper     Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, factor, ts_event, event_id);

CREATE TABLE IF NOT EXISTS regime_changes
(
    run_id    String,
    event_id  String,
    ts_event  DateTime64(9, 'UTC'),
    previous  LowCardinality(String),
    regime    LowCardinality(String),
    reason    String,
    fast_vol  Float64,                            -- recent volatility of the market factor, per bar
    slow_vol  Float64,                            -- its history
    ratio     Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, ts_event, event_id);

-- Forecast against outcome: each rebalance's ex-ante volatility beside the realised log return and volatility of
-- the account's equity over the bars until the next rebalance. z = realised return / forecast volatility of the
-- period; its standard deviation over the rebalances is the bias statistic (1: the covariance is right; above 1:
-- risk was underestimated).
CREATE OR REPLACE VIEW portfolio_forecast AS
WITH
    bar_returns AS (
        SELECT run_id, account, ts_event, r
        FROM (
            SELECT run_id, account, ts_event,
                   log(equity / lagInFrame(equity) OVER w) AS r,
                   row_number() OVER w AS k
            FROM equity FINAL
            WHERE equity > 0
            WINDOW w AS (PARTITION BY run_id, account ORDER BY ts_event
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        )
        WHERE k > 1
    ),
    decisions AS (
        SELECT run_id, ts_event AS rebalance_ts, method, regime, ex_ante_vol, horizon_bars
        FROM rebalances FINAL
    )
SELECT
    e.run_id AS run_id,
    e.account AS account,
    d.method AS method,
    d.regime AS regime,
    d.rebalance_ts AS ts_event,
    any(d.ex_ante_vol) AS ex_ante_vol,
    any(d.horizon_bars) AS horizon_bars,
    count() AS bars,
    any(d.ex_ante_vol) * sqrt(count()) AS forecast_vol,
    sum(e.r) AS realised_return,
    sqrt(sum(e.r * e.r)) AS realised_vol,
    if(any(d.ex_ante_vol) > 0, sum(e.r) / (any(d.ex_ante_vol) * sqrt(count())), NULL) AS z
FROM bar_returns AS e
ASOF INNER JOIN decisions AS d ON e.run_id = d.run_id AND e.ts_event > d.rebalance_ts
GROUP BY run_id, account, method, regime, ts_event;
