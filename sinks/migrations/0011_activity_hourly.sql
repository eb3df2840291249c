-- Events per rep, UTC hour and type, kept up to date by a materialized view over `events`: the
-- "today, hour by hour" view of the sales floor, without scanning raw events.
--
-- Why this materialized view is correct although `events` is a ReplacingMergeTree: the view sees
-- every inserted block, so a redelivered batch reaches it twice. It therefore stores the *set* of
-- event ids (uniqExact's state), not a count: merging two states is a set union, and a duplicate
-- id changes nothing, before or after any merge of either table. A count() or sum() here would
-- count every redelivery (and that is why the day/deal roll-ups in 0010 are plain views instead).
-- The key (rep_id, hour, type) is a property of the event itself, so every copy of an event falls
-- into the same row. Read with uniqExactMerge(...) grouped by the key (or by less of it).
--
-- The state holds a 128-bit hash per event: about 16 bytes per event per hour, the size of the
-- raw events' ids, and it is not subject to the raw events' TTL (that is the point of a roll-up).
CREATE TABLE IF NOT EXISTS {database}.activity_hourly
(
    rep_id          String,
    hour            DateTime('UTC'),
    type            LowCardinality(String),
    events          AggregateFunction(uniqExact, String),
    -- Calls with outcome "connected" (the calls_connected counter); empty for other types.
    connected_calls AggregateFunction(uniqExact, Nullable(String))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (rep_id, hour, type);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.activity_hourly_mv TO {database}.activity_hourly AS
SELECT
    rep_id,
    toStartOfHour(occurred_at, 'UTC') AS hour,
    type,
    uniqExactState(event_id) AS events,
    uniqExactState(
        if(type = 'call' AND JSONExtractString(payload, 'outcome') = 'connected', event_id, NULL)
    ) AS connected_calls
FROM {database}.events
GROUP BY rep_id, hour, type;

-- Backfill what was stored before the view existed. Safe to run again, and safe while workers
-- write (an event inserted meanwhile reaches the table twice, through the view and here): the
-- states are sets of ids.
INSERT INTO {database}.activity_hourly
SELECT
    rep_id,
    toStartOfHour(occurred_at, 'UTC') AS hour,
    type,
    uniqExactState(event_id) AS events,
    uniqExactState(
        if(type = 'call' AND JSONExtractString(payload, 'outcome') = 'connected', event_id, NULL)
    ) AS connected_calls
FROM {database}.events
GROUP BY rep_id, hour, type;

-- The same per rep and hour with the rep's current team and territory, one column per counter
-- (the leading figures of 0010's v_rep_daily_activity, by hour).
CREATE VIEW IF NOT EXISTS {database}.v_rep_hourly_activity AS
SELECT
    h.hour AS hour,
    h.rep_id AS rep_id,
    if(r.rep_id = '', h.rep_id, r.name) AS rep_name,
    if(r.rep_id = '', 'unassigned', r.team) AS team,
    if(r.rep_id = '', 'unassigned', r.territory) AS territory,
    sum(if(h.type = 'call', h.n, 0)) AS calls,
    sum(h.connected) AS calls_connected,
    sum(if(h.type = 'email', h.n, 0)) AS emails,
    sum(if(h.type = 'meeting_scheduled', h.n, 0)) AS meetings_scheduled,
    sum(if(h.type = 'meeting_held', h.n, 0)) AS meetings_held,
    sum(if(h.type = 'visit', h.n, 0)) AS visits,
    sum(if(h.type = 'demo', h.n, 0)) AS demos,
    sum(if(h.type = 'proposal_sent', h.n, 0)) AS proposals_sent,
    sum(if(h.type = 'deal_created', h.n, 0)) AS deals_created,
    calls + emails + meetings_scheduled + meetings_held + visits + demos + proposals_sent
        + deals_created AS activities
FROM
(
    SELECT rep_id, hour, type, uniqExactMerge(events) AS n, uniqExactMerge(connected_calls) AS connected
    FROM {database}.activity_hourly
    GROUP BY rep_id, hour, type
) AS h
LEFT JOIN (SELECT rep_id, name, team, territory FROM {database}.reps FINAL) AS r ON r.rep_id = h.rep_id
GROUP BY hour, rep_id, rep_name, team, territory;
