-- Paper and live trading: alerts for operators, and reconciliation with the venues (the venue is the truth).
CREATE TABLE IF NOT EXISTS alerts
(
    run_id    String,
    event_id  String,
    account   LowCardinality(String),
    venue     LowCardinality(String),
    ts_event  DateTime64(9, 'UTC'),
    kind      LowCardinality(String),            -- throttled | reconciliation | venue_stopped | solver_fallback | model_drift
    message   String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, ts_event, event_id);

CREATE TABLE IF NOT EXISTS reconciliation
(
    run_id           String,
    event_id         String,
    account          LowCardinality(String),
    venue            LowCardinality(String),
    ts_event         DateTime64(9, 'UTC'),
    kind             LowCardinality(String),     -- balance | open_order | fill
    key              String,                     -- currency, client order id or fill id
    local            String,                     -- the account's value, as text ('' when it had none)
    venue_value      String,                     -- the venue's value, as text ('' when it had none)
    difference       String,
    within_tolerance Bool,
    action           LowCardinality(String)      -- continue | stop (the venue's decision after this check)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, venue, ts_event, event_id);
