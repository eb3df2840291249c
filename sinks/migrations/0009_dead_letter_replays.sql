-- Dead letters that `salespulse dlq replay` republished, so a second replay skips them and
-- `salespulse dlq list` shows when and where each went.
--
-- dead_letter_id identifies a dead letter by the sort key of dead_letters (where the input was read,
-- why it was rejected, what it contained): cityHash64(source, ifNull(source_partition, -1),
-- ifNull(source_offset, -1), ifNull(batch_index, -1), reason, cityHash64(payload_excerpt)), computed
-- by the query that reads dead_letters (streams/cli_dlq.py), so both tables agree without storing
-- the key twice. Replaying the same dead letter again writes a newer row (newest wins; read FINAL).
CREATE TABLE IF NOT EXISTS {database}.dead_letter_replays
(
    dead_letter_id UInt64,
    reason         LowCardinality(String),
    source         LowCardinality(String),
    replayed_to    LowCardinality(String),
    replayed_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(replayed_at)
ORDER BY dead_letter_id;
