-- The read side for dashboards and reports: views with the KPI definitions of streams/kpi/metrics.py
-- (README, section KPIs), joined to the current rep records so a rep's history moves with them
-- when they change team.
--
-- Plain views, not materialized ones: every source here is a ReplacingMergeTree of absolute rows
-- (a day's count, a deal's current state), and a materialized view sees every inserted row,
-- including the older versions and redelivered copies that FINAL would drop. Summing those would
-- count a rewritten day twice. A view reads its sources with FINAL at query time, which is correct
-- before any merge, and the sources are already roll-ups (one row per rep, day and counter; one per
-- deal), so they stay small. The one materialized roll-up is over raw events (0011), where a
-- duplicate-insensitive aggregate makes it correct.
--
-- A rep without a record yet is in team and territory 'unassigned' (schemas.reps.UNASSIGNED).

-- Leading figures per rep and UTC day. `activities` is KpiTotals.activities: every counter but
-- calls_connected (those calls are already among the calls).
CREATE VIEW IF NOT EXISTS {database}.v_rep_daily_activity AS
SELECT
    a.day AS day,
    a.rep_id AS rep_id,
    if(r.rep_id = '', a.rep_id, r.name) AS rep_name,
    if(r.rep_id = '', 'unassigned', r.team) AS team,
    if(r.rep_id = '', 'unassigned', r.territory) AS territory,
    sumIf(a.events, a.type = 'call') AS calls,
    sumIf(a.events, a.type = 'call_connected') AS calls_connected,
    sumIf(a.events, a.type = 'email') AS emails,
    sumIf(a.events, a.type = 'meeting_scheduled') AS meetings_scheduled,
    sumIf(a.events, a.type = 'meeting_held') AS meetings_held,
    sumIf(a.events, a.type = 'visit') AS visits,
    sumIf(a.events, a.type = 'demo') AS demos,
    sumIf(a.events, a.type = 'proposal_sent') AS proposals_sent,
    sumIf(a.events, a.type = 'deal_created') AS deals_created,
    calls + emails + meetings_scheduled + meetings_held + visits + demos + proposals_sent
        + deals_created AS activities
FROM {database}.rep_daily_activity AS a FINAL
LEFT JOIN (SELECT rep_id, name, team, territory FROM {database}.reps FINAL) AS r ON r.rep_id = a.rep_id
GROUP BY day, rep_id, rep_name, team, territory;

-- Every deal in its current state, with its rep's team and territory. The KPI definitions on it:
--   won / lost in a window:  status = 'won' / 'lost' AND closed_at in the window
--   revenue:                  sum(ifNull(amount, 0)) of those won
--   open at moment T:         opened_at <= T AND (closed_at IS NULL OR closed_at > T)
--   open pipeline value at T: sum(ifNull(amount, 0)) of the deals open at T
CREATE VIEW IF NOT EXISTS {database}.v_deals AS
SELECT
    d.deal_id AS deal_id,
    d.rep_id AS rep_id,
    if(r.rep_id = '', d.rep_id, r.name) AS rep_name,
    if(r.rep_id = '', 'unassigned', r.team) AS team,
    if(r.rep_id = '', 'unassigned', r.territory) AS territory,
    ifNull(d.product, 'unassigned') AS product,
    ifNull(d.account_id, 'unassigned') AS account_id,
    d.status AS status,
    d.stage AS stage,
    d.opened_at AS opened_at,
    d.closed_at AS closed_at,
    d.amount AS amount,
    d.amount_missing AS amount_missing,
    d.cycle_days AS cycle_days,
    d.stage_advancements AS stage_advancements,
    d.last_event_at AS last_event_at
FROM {database}.deals AS d FINAL
LEFT JOIN (SELECT rep_id, name, team, territory FROM {database}.reps FINAL) AS r ON r.rep_id = d.rep_id;

-- Lagging figures per rep, product and UTC day of the close (deals_won, deals_lost, revenue and the
-- cycle-time sum of KpiTotals; ratios are taken after summing, never averaged across days).
CREATE VIEW IF NOT EXISTS {database}.v_rep_daily_outcomes AS
SELECT
    toDate(closed_at, 'UTC') AS day,
    rep_id,
    rep_name,
    team,
    territory,
    product,
    countIf(status = 'won') AS deals_won,
    countIf(status = 'lost') AS deals_lost,
    sumIf(ifNull(amount, 0), status = 'won') AS revenue,
    countIf(status = 'won' AND amount_missing = 0) AS won_with_amount,
    sumIf(ifNull(cycle_days, 0), status = 'won') AS cycle_days_sum
FROM {database}.v_deals
WHERE closed_at IS NOT NULL AND status IN ('won', 'lost')
GROUP BY day, rep_id, rep_name, team, territory, product;

-- Field visits with what the event reported: position, accuracy, check-out. Nothing here says a
-- rep was really there (that is the check-in verification's job); minutes_in_field is from the
-- visit's time to its check-out, when one was sent.
CREATE VIEW IF NOT EXISTS {database}.v_visits AS
SELECT
    e.event_id AS event_id,
    e.rep_id AS rep_id,
    if(r.rep_id = '', e.rep_id, r.name) AS rep_name,
    if(r.rep_id = '', 'unassigned', r.team) AS team,
    if(r.rep_id = '', 'unassigned', r.territory) AS territory,
    e.occurred_at AS occurred_at,
    e.account_id AS account_id,
    if(JSONHas(e.payload, 'lat'), JSONExtractFloat(e.payload, 'lat'), NULL) AS lat,
    if(JSONHas(e.payload, 'lon'), JSONExtractFloat(e.payload, 'lon'), NULL) AS lon,
    if(JSONHas(e.payload, 'accuracy_m'), JSONExtractFloat(e.payload, 'accuracy_m'), NULL) AS accuracy_m,
    parseDateTime64BestEffortOrNull(JSONExtractString(e.payload, 'check_out_at'), 3, 'UTC') AS check_out_at,
    if(check_out_at > e.occurred_at, dateDiff('second', e.occurred_at, check_out_at) / 60, NULL)
        AS minutes_in_field
FROM {database}.events AS e FINAL
LEFT JOIN (SELECT rep_id, name, team, territory FROM {database}.reps FINAL) AS r ON r.rep_id = e.rep_id
WHERE e.type = 'visit';

-- Alert occurrences in their newest state, with the rep and team they concern.
CREATE VIEW IF NOT EXISTS {database}.v_alerts AS
SELECT
    fingerprint,
    rule,
    scope,
    key,
    detail,
    status,
    severity,
    value,
    baseline,
    summary,
    if(scope = 'rep', key, '') AS rep_id,
    if(scope = 'team', key, labels['team']) AS team,
    if(scope = 'territory', key, labels['territory']) AS territory,
    labels['rep_name'] AS rep_name,
    starts_at,
    ends_at
FROM {database}.alerts FINAL;
