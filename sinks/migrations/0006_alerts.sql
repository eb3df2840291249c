-- Alerts of the early-warning rules, one row per alert occurrence (fingerprint + when it started),
-- rewritten as it changes: firing, re-notified, resolved. The newest updated_at wins; read with
-- FINAL. `fingerprint` is stable across occurrences of the same (rule, scope, key, detail).
CREATE TABLE IF NOT EXISTS {database}.alerts
(
    fingerprint String,
    rule        LowCardinality(String),
    scope       LowCardinality(String),
    key         String,
    detail      String,
    status      LowCardinality(String),
    severity    LowCardinality(String),
    value       Float64,
    baseline    Nullable(Float64),
    summary     String,
    action      String,
    labels      Map(String, String),
    starts_at   DateTime64(3, 'UTC'),
    ends_at     Nullable(DateTime64(3, 'UTC')),
    updated_at  DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(starts_at)
ORDER BY (fingerprint, starts_at);
