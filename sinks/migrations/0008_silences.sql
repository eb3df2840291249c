-- Silences created with `salespulse alerts silence`: the alerter reads the active ones on every
-- tick and mutes matching alerts until ends_at (or until expired early with `alerts unsilence`).
-- The id is a hash of the silence's content, so a retried command writes the same row again.
CREATE TABLE IF NOT EXISTS {database}.silences
(
    id         String,
    matchers   String,
    starts_at  DateTime64(3, 'UTC'),
    ends_at    DateTime64(3, 'UTC'),
    created_by String,
    comment    String,
    expired    UInt8,
    updated_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY id;
