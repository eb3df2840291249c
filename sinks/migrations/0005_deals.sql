-- Every deal's current state, as derived by the worker from the deal's events (streams.kpi.deals):
-- one row per deal, rewritten whenever one of its events arrives. Rows are absolute states, so a
-- rewrite (a redelivered batch) is harmless; the newest updated_at wins. Read with FINAL.
-- The deal's own events stay in `events`; this table is what boards and the worker's state
-- rebuild read (which deals are still open, or closed recently enough to take late events).
CREATE TABLE IF NOT EXISTS {database}.deals
(
    deal_id            String,
    rep_id             String,
    status             LowCardinality(String),
    stage              Nullable(String),
    opened_at          DateTime64(3, 'UTC'),
    closed_at          Nullable(DateTime64(3, 'UTC')),
    amount             Nullable(Decimal(18, 2)),
    amount_missing     UInt8,
    account_id         Nullable(String),
    product            Nullable(String),
    cycle_days         Nullable(Float64),
    stage_advancements UInt32,
    last_event_at      DateTime64(3, 'UTC'),
    updated_at         DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY deal_id;
