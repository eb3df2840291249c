-- Per rep, per UTC day, per event type: the absolute number of events, as computed by the worker
-- that owns the rep. Rows are absolute counts, not deltas, so writing a row again (a retried or
-- redelivered batch) is harmless: the row with the newest updated_at wins. As with events, read
-- with FINAL, because until a merge runs the older counts are still on disk next to the newer.
-- Partitioning by the month of `day` is safe for that merge: `day` is part of the key.
CREATE TABLE IF NOT EXISTS {database}.rep_daily_activity
(
    rep_id     String,
    day        Date,
    type       LowCardinality(String),
    events     UInt64,
    updated_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(day)
ORDER BY (rep_id, day, type);
