-- Rep records, latest version wins (read with FINAL). Teams and territories are joined at query
-- time, so moving a rep to another team moves their history with them.
--
-- hired_at is Date32, not Date: Date stops at 1970-01-01 and ClickHouse silently stores an
-- earlier date as 1970-01-01, which a long-tenured rep's hire date would hit.
CREATE TABLE IF NOT EXISTS {database}.reps
(
    rep_id        String,
    name          String,
    team          String,
    territory     String,
    manager       Nullable(String),
    hired_at      Nullable(Date32),
    quota_monthly Decimal(18, 2),
    mode          LowCardinality(String),
    updated_at    DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY rep_id;
