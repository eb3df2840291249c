-- Every deal's current state, as derived by the worker from the deal's events (streams.kpi.deals):
-- one row per deal, rewritten whenever one of its events arrives. Rows are absolute states, so a
-- rewrite (a redelivered batch) is harmless; the newest updated_at wins. Read with FINAL.
-- The row also carries the deal's events (canonical JSON), so a worker that needs a deal back in
-- memory reads one row by primary key instead of searching the events table by deal_id.
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
    events             Array(String) CODEC(ZSTD(3)),
    updated_at         DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY deal_id;
