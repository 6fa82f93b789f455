-- The router (issue: multi-exchange router). Orders say which parent they were routed from and their IOC
-- limit (no-ops on stores where they exist); routing decisions, arbitrage signals and cash balances per venue.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS parent_id String AFTER target_weight;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS limit_price Nullable(Float64) AFTER parent_id;

CREATE TABLE IF NOT EXISTS routing
(
    run_id             String,
    event_id           String,
    parent_id          String,
    account            LowCardinality(String),
    asset              LowCardinality(String),
    ts_event           DateTime64(9, 'UTC'),      -- decision time of the parent order
    side               LowCardinality(String),
    parent_amount      Float64,                   -- base units asked for
    instrument         LowCardinality(String),    -- the candidate venue instrument
    venue              LowCardinality(String),
    depth_source       LowCardinality(String),    -- book | quote | bar
    best_price_account Nullable(Float64),         -- best level net of taker fee, account currency
    depth_amount       Float64,                   -- base units inside the price-protection band
    chosen_amount      Float64,                   -- base units routed here (0: not used)
    expected_price     Nullable(Float64),         -- quote currency, volume-weighted over the levels taken
    child_id           String,                    -- the child order (orders.event_id); '' when not used
    reason             String                     -- '' when chosen, else why not
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, asset, ts_event, event_id);

CREATE TABLE IF NOT EXISTS arbitrage
(
    run_id           String,
    event_id         String,
    asset            LowCardinality(String),
    ts_event         DateTime64(9, 'UTC'),
    status           LowCardinality(String),      -- open (persisted beyond the threshold) | closed
    buy_instrument   LowCardinality(String),
    sell_instrument  LowCardinality(String),
    net_spread_bps   Float64,                     -- after both legs' taker fees
    gross_spread_bps Float64,
    opened_ts        DateTime64(9, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, asset, ts_event, event_id);

CREATE TABLE IF NOT EXISTS balances
(
    run_id        String,
    event_id      String,
    account       LowCardinality(String),
    venue         LowCardinality(String),
    currency      LowCardinality(String),
    ts_event      DateTime64(9, 'UTC'),
    amount        Float64,                        -- units of the currency
    rate          Float64,                        -- account currency per unit, the market rate then
    value_account Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, venue, currency, ts_event, event_id);
