-- The store of record: every accepted event, exactly as it was validated.
--
-- Why queries must read this table with FINAL (or a duplicate-insensitive aggregate):
-- delivery is at-least-once, so a batch that was written but not acknowledged is written again
-- after a restart or rebalance. ReplacingMergeTree keeps one row per ORDER BY key (event_id),
-- but only once a background merge has combined the parts holding the copies, at a time of the
-- server's choosing (possibly never for a quiet partition). Until then both copies are on disk
-- and a plain count() counts the event twice. Exact answers therefore use
--   FROM events FINAL             (the merge is done at read time), or
--   uniqExact(event_id)           (counting distinct ids instead of rows), or
--   argMax(col, ingested_at)      (one value per event_id after GROUP BY event_id),
-- or an aggregate that duplicates cannot change, such as max(occurred_at).
-- Never rely on OPTIMIZE ... FINAL having run.
--
-- Merges never cross partitions, so the partition key must be a property of the event itself:
-- occurred_at is, so every copy of an event lands in the same month and collapses there.
-- (A producer reusing an event_id for a different event in another month breaks that; ids are
-- unique by contract, and the worker counts only the first copy it sees.)
CREATE TABLE IF NOT EXISTS {database}.events
(
    event_id         String,
    type             LowCardinality(String),
    rep_id           String,
    account_id       Nullable(String),
    deal_id          Nullable(String),
    occurred_at      DateTime64(3, 'UTC'),
    amount           Nullable(Decimal(18, 2)),
    -- The canonical event JSON: any new column or roll-up can be backfilled from it.
    -- JSON compresses several times better with ZSTD than with the default LZ4.
    payload          String CODEC(ZSTD(3)),
    source           LowCardinality(String),
    source_partition Nullable(Int32),
    source_offset    Nullable(Int64),
    ingested_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id;
