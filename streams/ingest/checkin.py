"""Check-ins from reps' phones: the page (``GET /checkin``), the rep's accounts, and the check-ins.

A ``checkin`` token belongs to one rep; everything it sends is that rep's. A check-in becomes a
``visit`` event (``event_id`` ``checkin:<client_id>``) and a check-out a ``visit_check_out`` event
naming that visit, each with the phone's position and accuracy, published like every other event
(the worker stores them and verifies the visit against the account, :mod:`streams.visits`). The
answer tells the phone at once what the worker will conclude: verified, out of range (and how far),
or unlocated, from the same verification function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from schemas.accounts import Account
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import VisitCheckOutEvent, VisitEvent
from schemas.ingest import CheckIn, CheckInAction, CheckInResult, TokenScope
from schemas.settings import Settings
from schemas.wire import Event
from sinks.clickhouse import connect
from sinks.queries import assigned_accounts, stored_accounts
from streams.ingest.body import HTTP_SOURCE, BodyFormat, body_format
from streams.ingest.checkin_page import CHECKIN_PAGE
from streams.ingest.service import (
    BodyTooLargeError,
    IngestContext,
    ServiceUnavailableError,
    authorize,
    error_response,
    read_body,
    timed,
)
from streams.visits.geo import verify_at_account

AccountsLoader = Callable[[str, set[str]], tuple[list[Account], dict[str, Account]]]


def checkin_link(public_url: str, token: str) -> str:
    """A rep's personal link. The token is in the fragment: browsers never send it to a server (so
    no proxy or access log sees it); the page moves it to the phone's storage and off the address bar."""
    return f"{public_url.rstrip('/')}/checkin#token={quote(token, safe='')}"


def visit_event_id(client_id: str) -> str:
    return f"checkin:{client_id}"


def checkout_event_id(client_id: str) -> str:
    return f"checkout:{client_id}"


def _accounts_loader(settings: Settings) -> AccountsLoader:
    def load(rep_id: str, also: set[str]) -> tuple[list[Account], dict[str, Account]]:
        client = connect(settings)
        try:
            mine = assigned_accounts(client, settings.clickhouse_database, rep_id)
            known = {account.account_id: account for account in mine}
            if also - known.keys():
                everyone = stored_accounts(client, settings.clickhouse_database)
                known.update({k: everyone[k] for k in also - known.keys() if k in everyone})
            return mine, known
        finally:
            client.disconnect()

    return load


def _account_json(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "name": account.name,
        "lat": account.lat,
        "lon": account.lon,
        "radius_m": account.geofence_m,
        "segment": account.segment,
    }


def build_event(checkin: CheckIn, rep_id: str) -> Event:
    """The canonical event of one tap (ValidationError when the two do not make a valid event)."""
    if checkin.action is CheckInAction.CHECK_IN:
        return VisitEvent(
            event_id=visit_event_id(checkin.client_id),
            type="visit",
            rep_id=rep_id,
            occurred_at=checkin.occurred_at,
            account_id=checkin.account_id,
            lat=checkin.lat,
            lon=checkin.lon,
            accuracy_m=checkin.accuracy_m,
            attributes={"channel": "checkin_page"},
        )
    return VisitCheckOutEvent(
        event_id=checkout_event_id(checkin.client_id),
        type="visit_check_out",
        rep_id=rep_id,
        occurred_at=checkin.occurred_at,
        account_id=checkin.account_id,
        visit_id=checkin.visit_id or "",
        lat=checkin.lat,
        lon=checkin.lon,
        accuracy_m=checkin.accuracy_m,
        attributes={"channel": "checkin_page"},
    )


def _problem(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'check-in'}: {e['msg']}" for e in exc.errors()[:3]
    )


def checkin_routes(settings: Settings, loader: AccountsLoader | None = None) -> list[Route]:
    load_accounts = loader or _accounts_loader(settings)

    async def page(request: Request) -> Response:
        return HTMLResponse(
            CHECKIN_PAGE,
            headers={
                # The page needs nothing from elsewhere and must never be framed or leak its URL.
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
                ),
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    async def accounts(context: IngestContext, request: Request) -> Response:
        authorized = await authorize(context, request, TokenScope.CHECKIN)
        if isinstance(authorized, Response):
            return authorized
        rep_id = authorized.rep_id or ""
        mine, _ = await asyncio.to_thread(load_accounts, rep_id, set())
        return JSONResponse({"rep_id": rep_id, "accounts": [_account_json(a) for a in mine]})

    async def checkins(context: IngestContext, request: Request) -> Response:
        authorized = await authorize(context, request, TokenScope.CHECKIN)
        if isinstance(authorized, Response):
            return authorized
        if authorized.rep_id is None:
            return error_response(403, "this checkin token is bound to no rep")
        if body_format(request.headers.get("content-type")) is not BodyFormat.JSON:
            return error_response(415, "send the check-ins as application/json")
        try:
            body = await read_body(request, context.settings.ingest_max_body_bytes)
        except BodyTooLargeError as exc:
            return error_response(413, str(exc))
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"the body is not JSON: {exc}")
        items = document if isinstance(document, list) else [document]
        if len(items) > context.settings.ingest_max_events:
            return error_response(
                413, f"{len(items)} check-ins; the limit is {context.settings.ingest_max_events}"
            )
        now = context.clock()
        rep_id = authorized.rep_id
        parsed: list[tuple[int, CheckIn | None, str]] = []
        for index, item in enumerate(items):
            try:
                parsed.append((index, CheckIn.model_validate(item), ""))
            except ValidationError as exc:
                parsed.append((index, None, _problem(exc)))
        wanted = {c.account_id for _, c, _ in parsed if c is not None}
        _, known = await asyncio.to_thread(load_accounts, rep_id, wanted)
        results: list[CheckInResult] = []
        events: list[Event] = []
        dead_letters: list[DeadLetter] = []
        for index, checkin, problem in parsed:
            if checkin is not None and checkin.action is CheckInAction.CHECK_OUT and not checkin.visit_id:
                problem = "visit_id: a check-out names the check-in it ends"
            event: Event | None = None
            if checkin is not None and not problem:
                try:
                    event = build_event(checkin, rep_id)
                except ValidationError as exc:
                    problem = _problem(exc)
            if checkin is None or event is None:
                dead_letters.append(
                    DeadLetter.of(
                        DeadLetterReason.INVALID,
                        f"check-in: {problem}",
                        orjson.dumps(items[index]),
                        source=HTTP_SOURCE,
                        index=index,
                        rep_id=rep_id,
                        rejected_at=now,
                    )
                )
                raw = items[index] if isinstance(items[index], dict) else {}
                results.append(
                    CheckInResult(
                        client_id=str(raw.get("client_id", "")),
                        event_id="",
                        action=CheckInAction(str(raw.get("action")))
                        if raw.get("action") in ("check_in", "check_out")
                        else CheckInAction.CHECK_IN,
                        account_id=str(raw.get("account_id", "")),
                        status="rejected",
                        detail=problem,
                    )
                )
                continue
            events.append(event)
            account = known.get(checkin.account_id)
            verification = verify_at_account(account, checkin.lat, checkin.lon, checkin.accuracy_m)
            results.append(
                CheckInResult(
                    client_id=checkin.client_id,
                    event_id=event.event_id,
                    action=checkin.action,
                    account_id=checkin.account_id,
                    status=verification.status.value,
                    distance_m=round(verification.distance_m, 1)
                    if verification.distance_m is not None
                    else None,
                    radius_m=account.geofence_m if account else None,
                    detail=None if account else "unknown account: the visit is kept, unverified",
                    occurred_at=checkin.occurred_at,
                )
            )
        try:
            await context.publish(events, dead_letters)
        except ServiceUnavailableError as exc:
            return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        context.metrics.events(
            "checkins", accepted=len(events), rejected_reasons=(d.reason.value for d in dead_letters)
        )
        return Response(
            orjson.dumps([r.model_dump(mode="json", exclude_none=True) for r in results]),
            media_type="application/json",
        )

    return [
        Route("/checkin", page, methods=["GET"]),
        Route("/v1/checkin/accounts", timed("accounts", accounts), methods=["GET"]),
        Route("/v1/checkins", timed("checkins", checkins), methods=["POST"]),
    ]
