-- Online models (docs/ml.md): feature vectors, predictions with their inputs, the prequential pairs and scores,
-- the decision-time skill pairs of models and rule factors, blend weights, drift, and the end-of-run model state.
CREATE TABLE IF NOT EXISTS ml_features
(
    run_id      String,
    event_id    String,
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),                 -- the bar close the vector was made at
    names       Array(String),                        -- the features the data had at this bar
    values      Array(Float64),                       -- their values, in the order of names
    flags       Array(String),                        -- why the vector is invalid (warmup | gap | quarantine); [] valid
    close       Float64                               -- the bar's close: the price the label is measured from
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS ml_predictions
(
    run_id        String,
    event_id      String,
    model         LowCardinality(String),
    version       Int64,                              -- updates the model had learnt when it predicted
    instrument    LowCardinality(String),
    ts_event      DateTime64(9, 'UTC'),
    purpose       LowCardinality(String),             -- learn | decide
    value         Float64,                            -- P(up) for a classifier, forward log return for a regressor
    score         Float64,                            -- value on the rule signal's scale [-1, 1] (decide; else NaN)
    feature_ts    DateTime64(9, 'UTC'),               -- when the feature vector was made
    names         Array(String),                      -- the inputs' feature names
    inputs        Array(Float64),                     -- the inputs, in the order of names
    contributions Array(Float64),                     -- each input's term of the decision function ([] for a forest)
    intercept     Float64                             -- the decision function's constant (NaN for a forest)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, model, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS ml_outcomes
(
    run_id      String,
    event_id    String,
    model       LowCardinality(String),
    version     Int64,                                -- updates the model had learnt when it predicted
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),                 -- when the prediction was made
    ts_resolved DateTime64(9, 'UTC'),                 -- when its label became known
    value       Float64,                              -- the prediction
    label       Float64,                              -- the realised forward log return over the horizon
    regime      LowCardinality(String)                -- volatility regime at the prediction: calm | stressed | warmup
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, model, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS ml_metrics
(
    run_id         String,
    event_id       String,
    model          LowCardinality(String),
    ts_event       DateTime64(9, 'UTC'),
    instrument     LowCardinality(String),            -- '' over all instruments
    regime         LowCardinality(String),            -- '' over every regime
    samples        Int64,                             -- prequential pairs scored so far
    window_samples Int64,                             -- pairs in the information coefficient's window
    log_loss       Float64,                           -- cumulative (classifiers; NaN for regressors)
    accuracy       Float64,                           -- cumulative (classifiers; NaN for regressors)
    mae            Float64,                           -- cumulative mean absolute error (regressors; NaN else)
    hit_rate       Float64,                           -- share of pairs whose predicted sign was right
    ic             Float64,                           -- rank correlation of prediction and label over the window
    drift_events   Int64                              -- drifts detected so far
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, model, instrument, regime, ts_event, event_id);

CREATE TABLE IF NOT EXISTS ml_skill
(
    run_id      String,
    event_id    String,
    name        LowCardinality(String),               -- the model or rule factor
    mode        LowCardinality(String),               -- shadow | blended | rules
    instrument  LowCardinality(String),
    ts_event    DateTime64(9, 'UTC'),                 -- the rebalance the score was used or offered at
    ts_resolved DateTime64(9, 'UTC'),                 -- when the label became known
    score       Float64,                              -- on the rule signal's scale [-1, 1]
    label       Float64                               -- the forward log return over the horizon that followed
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, name, instrument, ts_event, event_id);

CREATE TABLE IF NOT EXISTS ml_weights
(
    run_id     String,
    event_id   String,
    model      LowCardinality(String),
    ts_event   DateTime64(9, 'UTC'),                  -- the rebalance the weight changed at
    previous   Float64,                               -- blend weight before
    weight     Float64,                               -- blend weight after: alpha = (1 - w) rules + w model
    reason     String,                                -- why it changed (skill, drift, decay, ...)
    model_ic   Float64,                               -- the model's rolling out-of-sample IC then
    rules_ic   Float64,                               -- the rule factors' over the same samples
    samples    Int64                                  -- samples the comparison rested on
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, model, ts_event, event_id);

CREATE TABLE IF NOT EXISTS ml_drift
(
    run_id     String,
    event_id   String,
    model      LowCardinality(String),
    ts_event   DateTime64(9, 'UTC'),                  -- when ADWIN saw the model's error change
    policy     LowCardinality(String),                -- what was done: none | reset | relearn
    version    Int64,                                 -- the model's updates when the drift was detected
    relearned  Int64,                                 -- labels the new model relearnt (relearn)
    detail     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, model, ts_event, event_id);

CREATE TABLE IF NOT EXISTS ml_models
(
    run_id        String,
    event_id      String,
    model         LowCardinality(String),
    ts_event      DateTime64(9, 'UTC'),               -- the end of the run
    kind          LowCardinality(String),             -- classifier | regressor
    algorithm     LowCardinality(String),             -- linear (scaler + logistic/linear regression) | forest
    pooled        Bool,                               -- one model across instruments (key '')
    horizon_bars  Int64,                              -- the label's horizon
    update_keys   Array(String),                      -- the pipelines' keys (instrument, or '' pooled)
    update_counts Array(Int64),                       -- updates each had learnt, in the order of update_keys
    features      Array(String),                      -- the feature names the model was trained on
    state         String                              -- base64 of the pickled pipelines (trusted files only)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (run_id, model, ts_event, event_id);
