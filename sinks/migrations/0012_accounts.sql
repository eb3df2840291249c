-- Customer accounts with their position, read by the worker to verify field visits and by the
-- KPIs (an account's owner defines a rep's assigned accounts; its segment marks key accounts).
-- Written by `salespulse import accounts`; the newest record of an account wins (read with FINAL).
-- lat/lon are NULL for an account without a position: visits to it are `unlocated`. radius_m NULL
-- means the default geofence (schemas.accounts.DEFAULT_RADIUS_M).
CREATE TABLE IF NOT EXISTS {database}.accounts
(
    account_id   String,
    name         String,
    lat          Nullable(Float64),
    lon          Nullable(Float64),
    radius_m     Nullable(Float64),
    segment      Nullable(String),
    owner_rep_id Nullable(String),
    updated_at   DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY account_id;
