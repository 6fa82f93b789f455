-- headrace tables. Applied idempotently by `headrace db init` and at the start of every run.
-- Every row carries run_id and a deterministic event_id. Tables are ReplacingMergeTree ordered by a key
-- that ends in event_id, so a row written twice (a resumed run re-sending what it wrote before the crash)
-- collapses to one: queries read with FINAL, and a resumed replay runs OPTIMIZE ... FINAL on the partitions it wrote.
-- Partitions are months of ts_event (days made a replay write ~8 files per day of data: slow, for nothing).
-- Times are DateTime64(9, 'UTC') (epoch ns in the engine). Money is Float64 in the unit the column names.

CREATE TABLE IF NOT EXISTS runs
(
    run_id       String,
    mode         LowCardinality(String),
    status       LowCardinality(String),          -- running | finished | failed
    started_at   DateTime64(3, 'UTC'),
    updated_at   DateTime64(3, 'UTC'),
    config       String,                          -- the validated config as JSON (no secrets live there)
    data         String,                          -- JSON list of data paths replayed
    summary      String                           -- JSON summary written when the run finishes
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY run_id;

CREATE TABLE IF NOT EXISTS bars
(
    run_id      String,
    event_id    String,
    instrument  LowCardinality(String),
    venue       LowCardinality(String),
    ts_open     DateTime64(9, 'UTC'),
    ts_event    DateTime64(9, 'UTC'),             -- bar close
    open        Float64,
    high        Float64,
    low         Float64,
    close       Float64,
    volume      Float64,                          -- base units
    trades      Int64,                            -- -1 when the recorded bar does not say
    bid         Nullable(Float64),
    ask         Nullable(Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS features
(
    run_id      String,
    event_id    String,
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),
    close       Float64,
    log_return  Nullable(Float64),
    volatility  Nullable(Float64),                -- EWMA std of log returns, per bar
    momentum    Nullable(Float64)                 -- log return over the lookback
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS signals
(
    run_id      String,
    event_id    String,
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),
    strategy    LowCardinality(String),
    score       Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS targets
(
    run_id      String,
    event_id    String,
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),
    weight      Float64,                          -- fraction of account equity, signed
    status      LowCardinality(String),
    volatility  Nullable(Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS orders
(
    run_id        String,
    event_id      String,                         -- the order id
    account       LowCardinality(String),
    instrument    LowCardinality(String),
    venue         LowCardinality(String),
    ts_event      DateTime64(9, 'UTC'),
    side          LowCardinality(String),
    amount        Float64,                        -- base units
    reason        LowCardinality(String),
    target_weight Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS fills
(
    run_id        String,
    event_id      String,                         -- the fill id
    order_id      String,
    account       LowCardinality(String),
    instrument    LowCardinality(String),
    venue         LowCardinality(String),
    ts_event      DateTime64(9, 'UTC'),
    side          LowCardinality(String),
    price         Float64,                        -- quote currency per base unit
    amount        Float64,                        -- base units
    notional      Float64,                        -- quote currency
    fee           Float64,
    fee_currency  LowCardinality(String),
    liquidity     LowCardinality(String),
    slippage_bps  Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS positions
(
    run_id          String,
    event_id        String,
    account         LowCardinality(String),
    instrument      LowCardinality(String),
    venue           LowCardinality(String),
    asset           LowCardinality(String),
    quote           LowCardinality(String),
    ts_event        DateTime64(9, 'UTC'),
    amount          Float64,                      -- base units, signed
    avg_price       Float64,
    mark            Float64,
    unrealized_pnl  Float64,                      -- quote currency
    realized_pnl    Float64,                      -- quote currency, fees not included
    fees            Float64,                      -- quote currency, cumulative
    value_account   Float64,                      -- amount * mark in the account currency
    mark_ts         DateTime64(9, 'UTC'),         -- close time of the bar that gave the mark
    stale           Bool                          -- the instrument's data has stopped: mark is its last price
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS order_status
(
    run_id      String,
    event_id    String,
    order_id    String,
    account     LowCardinality(String),
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),             -- when the order expired or was skipped
    status      LowCardinality(String),           -- expired | skipped
    reason      String                            -- instrument stale | end of data | no bar closes at the decision time
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS instrument_status
(
    run_id      String,
    event_id    String,
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),             -- the processed bar time at which the change was seen
    status      LowCardinality(String),           -- stale (left the cross-section) | live (came back)
    last_bar_ts DateTime64(9, 'UTC')              -- close of the instrument's last bar then
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS equity
(
    run_id          String,
    event_id        String,
    account         LowCardinality(String),
    ts_event        DateTime64(9, 'UTC'),
    equity          Float64,                      -- account currency
    cash            Float64,
    gross_exposure  Float64,
    net_exposure    Float64,
    fees            Float64,                      -- cumulative, account currency
    traded          Float64,                      -- cumulative notional traded, account currency
    currency        LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, account, ts_event, event_id);

CREATE TABLE IF NOT EXISTS quarantine
(
    run_id      String,
    event_id    String,
    instrument  LowCardinality(String),           -- empty when the record was too broken to tell
    ts_event    DateTime64(9, 'UTC'),             -- 0 (1970) when unknown
    ts_recv     DateTime64(9, 'UTC'),
    source      String,                           -- file path or feed
    row         Int64,                            -- 0-based data row in the file, -1 when not from a file
    reason      String,
    raw         String                            -- the record as read, JSON
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, source, row, event_id);
