"""The ingest service's pure core: tokens, rate limits, request bodies, webhook mappings, check-ins."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from schemas.ingest import CheckIn, TokenScope
from schemas.webhooks import WebhookMapping
from streams.ingest.body import BodyFormat, TooManyEventsError, UnreadableBodyError, body_format, decode_body
from streams.ingest.ratelimit import RateLimiter
from streams.ingest.tokens import TokenBook, new_token, parse_scopes, token_hash, token_id_of
from streams.ingest.webhooks import map_payload, sign_generic, sign_hubspot_v3, verify_signature

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
HUBSPOT = Path(__file__).resolve().parents[2] / "deploy" / "webhooks" / "hubspot.yaml"


def call(event_id: str, rep: str = "rep-1", **extra: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "call",
        "rep_id": rep,
        "occurred_at": "2026-11-26T08:00:00Z",
        **extra,
    }


# ------------------------------------------------------------------------------------------ tokens


def test_a_token_is_stored_as_its_hash_and_checked_in_constant_time() -> None:
    token, record = new_token("dialer", (TokenScope.EVENTS_WRITE,), rep_id=None, now=NOW)
    assert token.startswith(f"sp_{record.token_id}_") and token_id_of(token) == record.token_id
    assert token not in record.model_dump_json() and record.token_hash == token_hash(token)
    book = TokenBook([record])
    assert book.authenticate(token) == record
    # Same id, another secret; malformed; unknown id: all refused.
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert book.authenticate(forged) is None
    assert book.authenticate("sp_nothing") is None
    other, _ = new_token("other", (TokenScope.EVENTS_WRITE,), rep_id=None, now=NOW)
    assert book.authenticate(other) is None
    revoked = TokenBook([record.model_copy(update={"revoked_at": NOW + timedelta(minutes=1)})])
    assert revoked.authenticate(token) is None


def test_tokens_are_unique_and_a_checkin_token_needs_a_rep() -> None:
    tokens = {new_token("t", (TokenScope.EVENTS_WRITE,), rep_id=None, now=NOW)[0] for _ in range(200)}
    assert len(tokens) == 200
    with pytest.raises(ValueError, match="--rep"):
        new_token("phone", (TokenScope.CHECKIN,), rep_id=None, now=NOW)
    _, record = new_token("phone", (TokenScope.CHECKIN,), rep_id="rep-ana", now=NOW)
    assert record.rep_id == "rep-ana"


def test_scopes_parse_and_unknown_ones_are_named() -> None:
    assert parse_scopes("events:write, checkin,events:write") == (TokenScope.EVENTS_WRITE, TokenScope.CHECKIN)
    with pytest.raises(ValueError, match="'admin'"):
        parse_scopes("events:write,admin")
    with pytest.raises(ValueError, match="at least one"):
        parse_scopes(" , ")


# -------------------------------------------------------------------------------------- rate limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_allows_a_burst_then_the_rate_and_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # per key
    clock.now += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0


@given(st.lists(st.floats(min_value=0, max_value=2.0), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(steps: list[float]) -> None:
    """Brute force: over any schedule of requests, the allowed ones never exceed what a bucket of
    ``burst`` refilled at ``rate`` can give, and a refused request's wait is positive."""
    clock = Clock()
    limiter = RateLimiter(rate_per_s=5.0, burst=4, clock=clock)
    start, allowed = clock.now, 0
    for step in steps:
        clock.now += step
        wait = limiter.acquire("k")
        if wait == 0.0:
            allowed += 1
        else:
            assert 0 < wait <= 1 / 5.0 + 1e-9
        assert allowed <= 4 + 5.0 * (clock.now - start) + 1e-9


# ------------------------------------------------------------------------------------------- bodies


def test_content_types() -> None:
    assert body_format("application/json; charset=utf-8") is BodyFormat.JSON
    assert body_format("application/x-ndjson") is BodyFormat.NDJSON
    assert body_format("text/plain") is None and body_format(None) is None


def test_a_bad_event_never_holds_back_the_good_ones_and_keeps_its_index() -> None:
    body = orjson.dumps(
        [call("a"), {"event_id": "b", "type": "call"}, call("c"), "nope", call("d", type="dance")]
    )
    decoded = decode_body(body, BodyFormat.JSON, now=NOW, max_events=10, max_event_bytes=1 << 20)
    assert [(r.index, r.status, r.reason) for r in decoded.results] == [
        (0, "accepted", None),
        (1, "rejected", "invalid"),
        (2, "accepted", None),
        (3, "rejected", "not_an_object"),
        (4, "rejected", "unknown_type"),
    ]
    assert [e.event_id for e in decoded.events] == ["a", "c"]
    assert [(d.index, d.source, d.event_id) for d in decoded.dead_letters] == [
        (1, "http", "b"),
        (3, "http", None),
        (4, "http", "d"),
    ]


def test_ndjson_lines_and_a_single_object() -> None:
    body = b"\n".join([orjson.dumps(call("a")), b"", b"{not json", orjson.dumps(call("b"))]) + b"\n"
    decoded = decode_body(body, BodyFormat.NDJSON, now=NOW, max_events=10, max_event_bytes=1 << 20)
    assert [(r.index, r.status, r.reason) for r in decoded.results] == [
        (0, "accepted", None),
        (1, "rejected", "not_json"),
        (2, "accepted", None),
    ]
    single = decode_body(
        orjson.dumps(call("x")), BodyFormat.JSON, now=NOW, max_events=1, max_event_bytes=1 << 20
    )
    assert [(r.index, r.status, r.event_id) for r in single.results] == [(0, "accepted", "x")]


def test_too_many_events_and_unreadable_bodies() -> None:
    with pytest.raises(TooManyEventsError, match="3 events; the limit is 2"):
        decode_body(
            orjson.dumps([call("a")] * 3), BodyFormat.JSON, now=NOW, max_events=2, max_event_bytes=1 << 20
        )
    with pytest.raises(TooManyEventsError):
        decode_body(b"{}\n{}\n{}", BodyFormat.NDJSON, now=NOW, max_events=2, max_event_bytes=1 << 20)
    with pytest.raises(UnreadableBodyError, match="not JSON"):
        decode_body(b"[{", BodyFormat.JSON, now=NOW, max_events=2, max_event_bytes=1 << 20)
    with pytest.raises(UnreadableBodyError, match="UTF-8"):
        decode_body(b"\xff\xfe", BodyFormat.JSON, now=NOW, max_events=2, max_event_bytes=1 << 20)


@given(st.lists(st.sampled_from(["good", "bad", "scalar"]), max_size=30))
def test_results_partition_the_request(kinds: list[str]) -> None:
    items: list[object] = []
    for i, kind in enumerate(kinds):
        items.append(call(f"e{i}") if kind == "good" else {"event_id": f"e{i}"} if kind == "bad" else i)
    decoded = decode_body(
        orjson.dumps(items), BodyFormat.JSON, now=NOW, max_events=100, max_event_bytes=1 << 20
    )
    assert [r.index for r in decoded.results] == list(range(len(kinds)))
    assert [r.status == "accepted" for r in decoded.results] == [k == "good" for k in kinds]
    assert len(decoded.events) + len(decoded.dead_letters) == len(kinds)


# ------------------------------------------------------------------------------------------ webhooks


def hubspot() -> WebhookMapping:
    return WebhookMapping.model_validate(yaml.safe_load(HUBSPOT.read_text(encoding="utf-8")))


def hubspot_item(event_id: int, kind: str, **extra: object) -> dict[str, object]:
    return {
        "eventId": event_id,
        "subscriptionId": 77,
        "portalId": 62515,
        "appId": 1160452,
        "occurredAt": 1764147600000,  # 2025-11-26T09:00:00Z
        "subscriptionType": kind,
        "attemptNumber": 0,
        "objectId": 1246965,
        "changeSource": "CRM_UI",
        "sourceId": "userId:456",
        **extra,
    }


def test_the_hubspot_mapping_turns_deal_notifications_into_deal_events() -> None:
    payload = [
        hubspot_item(1, "deal.creation"),
        hubspot_item(
            2, "deal.propertyChange", propertyName="dealstage", propertyValue="presentationscheduled"
        ),
        hubspot_item(3, "deal.propertyChange", propertyName="dealstage", propertyValue="closedwon"),
        hubspot_item(4, "deal.propertyChange", propertyName="dealname", propertyValue="Renamed"),
        hubspot_item(5, "deal.propertyChange", propertyName="dealstage", propertyValue="closedlost"),
        hubspot_item(6, "deal.creation", sourceId="integration:99"),  # an integration: no rep
        hubspot_item(7, "contact.creation"),
    ]
    payload[5].pop("sourceId")
    decoded = map_payload(hubspot(), orjson.dumps(payload), now=NOW, max_events=100)
    assert [(r.index, r.status, r.type) for r in decoded.results] == [
        (0, "accepted", "deal_created"),
        (1, "accepted", "deal_stage_changed"),
        (2, "accepted", "deal_won"),
        (3, "ignored", None),
        (4, "accepted", "deal_lost"),
        (5, "rejected", None),
        (6, "ignored", None),
    ]
    created, stage, won, lost = decoded.events
    assert created.event_id == "hubspot:62515:1" and created.rep_id == "456"
    assert created.deal_id == "hubspot:1246965"  # type: ignore[union-attr]
    assert created.occurred_at == datetime(2025, 11, 26, 9, 0, tzinfo=UTC)
    assert created.attributes == {"change_source": "CRM_UI"}
    assert stage.stage == "discovery"  # type: ignore[union-attr]
    assert won.amount == 0 and won.attributes == {"change_source": "CRM_UI", "amount_missing": True}  # type: ignore[union-attr]
    assert lost.type == "deal_lost"
    (letter,) = decoded.dead_letters
    assert letter.source == "http" and letter.index == 5 and "rep_id" in letter.detail
    assert letter.detail.startswith("webhook hubspot:")


def test_synonyms_timestamps_and_constants_of_a_generic_mapping() -> None:
    mapping = WebhookMapping.model_validate(
        {
            "source": "dialer",
            "items_path": "data.calls",
            "timezone": "Europe/Paris",
            "rules": [
                {
                    "type": "call",
                    "fields": {
                        "event_id": {"template": "dialer:{id}"},
                        "rep_id": {"path": "agent.email", "synonyms": {"Ana@Example.com": "rep-ana"}},
                        "occurred_at": {"path": "started"},
                        "outcome": {"path": "result", "synonyms": {"answered": "connected"}},
                        "duration_s": "seconds",
                    },
                }
            ],
        }
    )
    body = orjson.dumps(
        {
            "data": {
                "calls": [
                    {
                        "id": 9,
                        "agent": {"email": "ana@example.com"},
                        "started": "2026-11-26 10:00",
                        "result": "ANSWERED",
                        "seconds": "61",
                    },
                    {"id": 10, "agent": {"email": "bo"}, "started": "26/11/2026", "result": "busy"},
                ]
            }
        }
    )
    decoded = map_payload(mapping, body, now=NOW, max_events=10)
    (event,) = decoded.events
    assert event.rep_id == "rep-ana" and event.occurred_at == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert event.outcome == "connected" and event.duration_s == 61  # type: ignore[union-attr]
    assert decoded.results[1].status == "rejected" and "occurred_at" in (decoded.results[1].detail or "")


def test_generic_signatures_refuse_tampering_staleness_and_missing_headers() -> None:
    spec = hubspot().signature.model_copy(
        update={"scheme": "generic", "header": "X-Sig", "timestamp_header": "X-Ts"}
    )
    body, secret = b'[{"a": 1}]', b"s3cret"
    stamp = int(NOW.timestamp())
    good = {"X-Sig": sign_generic(secret, body, stamp), "X-Ts": str(stamp)}
    check = lambda headers, payload=body, now=NOW: verify_signature(  # noqa: E731
        spec, secret, headers=headers, body=payload, method="POST", uri="/x", now=now
    )
    assert check(good) is None
    assert check({k.lower(): v for k, v in good.items()}) is None  # header names are case-insensitive
    assert check(good, body + b" ") == "signature does not match"
    assert check({**good, "X-Ts": str(stamp + 1)}) == "signature does not match"  # the stamp is signed
    assert "tolerance" in (check(good, now=NOW + timedelta(seconds=301)) or "")
    assert "tolerance" in (check(good, now=NOW - timedelta(seconds=301)) or "")
    assert "missing" in (check({"X-Ts": str(stamp)}) or "")
    assert verify_signature(spec, b"other", headers=good, body=body, method="POST", uri="/x", now=NOW)


def test_hubspot_v3_signatures_cover_method_uri_body_and_milliseconds() -> None:
    spec = hubspot().signature
    body, secret = b"[]", b"client-secret"
    stamp_ms = int(NOW.timestamp() * 1000)
    uri = "https://ingest.example.com/v1/webhooks/hubspot"
    headers = {
        "X-HubSpot-Signature-v3": sign_hubspot_v3(secret, "POST", uri, body, stamp_ms),
        "X-HubSpot-Request-Timestamp": str(stamp_ms),
    }
    assert verify_signature(spec, secret, headers=headers, body=body, method="POST", uri=uri, now=NOW) is None
    assert verify_signature(spec, secret, headers=headers, body=body, method="POST", uri=uri + "?x", now=NOW)
    late = NOW + timedelta(minutes=6)
    assert "tolerance" in (
        verify_signature(spec, secret, headers=headers, body=body, method="POST", uri=uri, now=late) or ""
    )


def test_mapping_files_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        WebhookMapping.model_validate(
            {"source": "x", "rules": [{"type": "call", "fields": {"rep_id": {"path": "a", "value": "b"}}}]}
        )
    with pytest.raises(ValueError, match="source"):
        WebhookMapping.model_validate({"source": "Bad Name", "rules": []})


# ------------------------------------------------------------------------------------------ checkins


def test_a_checkin_build_makes_a_visit_and_a_checkout_names_it() -> None:
    from streams.ingest.checkin import build_event

    tap = CheckIn.model_validate(
        {
            "client_id": "abc-12345",
            "action": "check_in",
            "account_id": "acme",
            "occurred_at": "2026-11-26T09:00:00+01:00",
            "lat": 48.85,
            "lon": 2.29,
            "accuracy_m": 8,
        }
    )
    visit = build_event(tap, "rep-ana")
    assert (visit.type, visit.event_id, visit.rep_id, visit.account_id) == (
        "visit",
        "checkin:abc-12345",
        "rep-ana",
        "acme",
    )
    leave = tap.model_copy(
        update={"action": "check_out", "client_id": "def-67890", "visit_id": visit.event_id}
    )
    out = build_event(leave, "rep-ana")
    assert (out.type, out.event_id, out.visit_id) == (
        "visit_check_out",
        "checkout:def-67890",
        "checkin:abc-12345",
    )  # type: ignore[union-attr]
    assert not math.isnan(out.lat or 0)


# --------------------------------------------------------------------------------- never crashes

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
HUBSPOT_KEYS = ["eventId", "portalId", "objectId", "occurredAt", "subscriptionType", "sourceId",
                "propertyName", "propertyValue", "changeSource"]  # fmt: skip
HUBSPOT_LIKE = st.dictionaries(
    st.sampled_from(HUBSPOT_KEYS),
    JSON_VALUES
    | st.sampled_from(["deal.creation", "deal.propertyChange", "dealstage", "closedwon", "userId:1"])
    | st.integers(min_value=-(10**15), max_value=10**15),
)


# A real notification with a few fields replaced by anything: most of these map, some are broken.
PERTURBED = st.builds(
    lambda kind, stage, changes: {
        **hubspot_item(7, kind, propertyName="dealstage", propertyValue=stage),
        **changes,
    },
    st.sampled_from(["deal.creation", "deal.propertyChange"]),
    st.sampled_from(["closedwon", "closedlost", "contractsent", "custom-stage", ""]),
    st.dictionaries(st.sampled_from(HUBSPOT_KEYS), JSON_VALUES, max_size=2),
)


@given(st.lists(PERTURBED | HUBSPOT_LIKE | JSON_VALUES, max_size=8))
def test_any_webhook_payload_maps_to_results_without_raising(items: list[object]) -> None:
    """Whatever a CRM sends, every item ends accepted, rejected (with a dead letter) or ignored."""
    decoded = map_payload(hubspot(), orjson.dumps(items), now=NOW, max_events=100)
    assert [r.index for r in decoded.results] == list(range(len(items)))
    rejected = [r for r in decoded.results if r.status == "rejected"]
    assert len(rejected) == len(decoded.dead_letters)
    assert len(decoded.events) == sum(1 for r in decoded.results if r.status == "accepted")


@given(st.binary(max_size=300), st.sampled_from(list(BodyFormat)))
def test_any_body_decodes_or_is_refused_as_a_whole(body: bytes, fmt: BodyFormat) -> None:
    try:
        decoded = decode_body(body, fmt, now=NOW, max_events=50, max_event_bytes=1 << 20)
    except (UnreadableBodyError, TooManyEventsError):
        return
    assert len(decoded.events) + len(decoded.dead_letters) == len(decoded.results)
