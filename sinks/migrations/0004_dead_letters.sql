-- Inputs we could not use, with the reason and where they came from.
--
-- Identity of a dead letter: where the input was read (source, partition, offset and position in
-- a batch message), why it was rejected, and what it contained. A redelivered message produces
-- the same identity, so ReplacingMergeTree keeps one row (the latest rejection wins); read with
-- FINAL. Inputs without a position (a file or HTTP source) are told apart by their content.
--
-- The position columns stay Nullable, because "no offset" is a fact worth keeping, but the key
-- uses ifNull(col, -1) rather than the columns themselves: a Nullable key column needs
-- allow_nullable_key, a non-default setting that every later ALTER and tool must respect, while
-- -1 can never be a real partition, offset or batch index. The excerpt is keyed by its hash so
-- the key stays small however long the excerpt is.
--
-- Not partitioned: rejected_at differs between copies, and merges never cross partitions.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    reason            LowCardinality(String),
    detail            String,
    source            LowCardinality(String),
    source_partition  Nullable(Int32),
    source_offset     Nullable(Int64),
    batch_index       Nullable(Int32),
    event_id          Nullable(String),
    rep_id            Nullable(String),
    payload_excerpt   String,
    payload_truncated UInt8,
    rejected_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(rejected_at)
ORDER BY (
    source,
    ifNull(source_partition, -1),
    ifNull(source_offset, -1),
    ifNull(batch_index, -1),
    reason,
    cityHash64(payload_excerpt)
);
