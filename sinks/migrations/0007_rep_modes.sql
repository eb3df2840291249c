-- Management mode changes of reps (developing / seasoned, and why), as the alerter decides them:
-- a history, so boards can show when a rep's oversight shifted to activity rules and back.
CREATE TABLE IF NOT EXISTS {database}.rep_modes
(
    rep_id     String,
    mode       LowCardinality(String),
    reason     String,
    changed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (rep_id, changed_at);
