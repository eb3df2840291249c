-- Field visits as the worker assembled and verified them (streams/visits/book.py): one row per
-- visit_id (the check-in's event_id), absolute, the newest updated_at winning (read with FINAL).
-- A visit's row is rewritten when its check-out arrives or its flags change, so no partitioning:
-- every version of a row must be able to merge with the others (and the table stays small).
--
-- status: verified | out_of_range | unlocated; distance_m from the reported position to the
-- account (NULL when unlocated). check_in_missing: a check-out whose check-in never arrived (the
-- row sits at the check-out time, without a duration; it is not counted as a visit).
-- lat/lon/accuracy_m are the reported position: personal data, dropped after
-- SALESPULSE_VISIT_LOCATION_RETENTION_DAYS by a column TTL that `db migrate` and the worker's
-- start apply (sinks/retention.py); status and distance_m stay.
CREATE TABLE IF NOT EXISTS {database}.visits
(
    visit_id          String,
    rep_id            String,
    account_id        Nullable(String),
    checked_in_at     DateTime64(3, 'UTC'),
    checked_out_at    Nullable(DateTime64(3, 'UTC')),
    duration_s        Nullable(Float64),
    status            LowCardinality(String),
    distance_m        Nullable(Float64),
    radius_m          Nullable(Float64),
    lat               Nullable(Float64),
    lon               Nullable(Float64),
    accuracy_m        Nullable(Float64),
    check_in_missing  UInt8,
    overlaps          UInt8,
    impossible_travel UInt8,
    travel_speed_kmh  Nullable(Float64),
    updated_at        DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY visit_id;

-- Visits with their rep's team and territory and the account's name and segment, for the Field
-- visits board and reports. occurred_at is the check-in. Orphan check-outs are left out.
CREATE VIEW IF NOT EXISTS {database}.v_field_visits AS
SELECT
    v.visit_id AS visit_id,
    v.rep_id AS rep_id,
    if(r.rep_id = '', v.rep_id, r.name) AS rep_name,
    if(r.rep_id = '', 'unassigned', r.team) AS team,
    if(r.rep_id = '', 'unassigned', r.territory) AS territory,
    v.account_id AS account_id,
    if(a.account_id = '', ifNull(v.account_id, ''), a.name) AS account_name,
    a.segment AS segment,
    v.checked_in_at AS occurred_at,
    v.checked_out_at AS checked_out_at,
    v.duration_s AS duration_s,
    v.duration_s / 60 AS minutes_in_field,
    v.status AS status,
    v.distance_m AS distance_m,
    v.radius_m AS radius_m,
    v.lat AS lat,
    v.lon AS lon,
    v.accuracy_m AS accuracy_m,
    v.overlaps AS overlaps,
    v.impossible_travel AS impossible_travel,
    v.travel_speed_kmh AS travel_speed_kmh
FROM {database}.visits AS v FINAL
LEFT JOIN (SELECT rep_id, name, team, territory FROM {database}.reps FINAL) AS r ON r.rep_id = v.rep_id
LEFT JOIN (SELECT account_id, name, segment FROM {database}.accounts FINAL) AS a
    ON a.account_id = ifNull(v.account_id, '')
WHERE v.check_in_missing = 0;
