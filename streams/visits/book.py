"""One rep's visits, assembled from check-ins (``visit`` events) and check-outs
(``visit_check_out`` events, or a visit's own ``check_out_at``), and assessed as rows.

Rules (README, section Field visits):

- A visit is identified by its check-in's ``event_id`` (``visit_id``). Its end is the latest
  check-out time given for it (its own ``check_out_at`` or a ``visit_check_out``); its duration runs
  from the check-in to that end.
- A check-out whose check-in is unknown is kept as a visit row of its own, flagged
  ``check_in_missing``, at the check-out time and without a duration; when the check-in arrives
  the row becomes the whole visit.
- Two visits overlap when one is checked into before the other is checked out of; both are
  flagged, and time in field counts the overlap once.
- A visit whose position is farther from the rep's previous visit than ``max_speed_kmh`` allows in
  the time between them (the previous check-out, else its check-in) is flagged
  ``impossible_travel``.
- Verification uses the check-in's position, else the check-out's. It is fixed once it was made
  against a located account (moving an account later does not rewrite what was verified); a visit
  that was ``unlocated`` only because its account had no position yet is verified when the account
  gets one.

Rows are absolute: ``changed`` returns the rows that differ from the last ones returned, so
writing them again is harmless and a replay writes nothing new.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from schemas.accounts import Account
from schemas.events import VisitCheckOutEvent, VisitEvent
from streams.visits.geo import (
    UNLOCATED,
    Verification,
    VisitStatus,
    haversine_m,
    implied_speed_kmh,
    impossible_travel,
    verify_at_account,
)

VisitPart = VisitEvent | VisitCheckOutEvent


@dataclass(frozen=True, slots=True)
class TravelPolicy:
    """Plausible driving: ``max_speed_kmh`` door to door, and ``slack_m`` of GPS noise."""

    max_speed_kmh: float = 130.0
    slack_m: float = 1_000.0


@dataclass(frozen=True, slots=True)
class VisitRecord:
    """A visit as stored (ClickHouse ``visits``; one row per ``visit_id``, the newest wins)."""

    visit_id: str
    rep_id: str
    account_id: str | None
    checked_in_at: datetime
    checked_out_at: datetime | None
    status: VisitStatus
    distance_m: float | None
    radius_m: float | None
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    check_in_missing: bool = False
    overlaps: bool = False
    impossible_travel: bool = False
    travel_speed_kmh: float | None = None

    @property
    def duration_s(self) -> float | None:
        if self.checked_out_at is None or self.check_in_missing:
            return None
        return (self.checked_out_at - self.checked_in_at).total_seconds()


@dataclass(frozen=True, slots=True)
class _Position:
    lat: float
    lon: float
    accuracy_m: float | None


def _position(part: VisitPart | None) -> _Position | None:
    if part is None or part.lat is None or part.lon is None:
        return None
    return _Position(part.lat, part.lon, part.accuracy_m)


class VisitBook:
    def __init__(self, rep_id: str, policy: TravelPolicy | None = None) -> None:
        self.rep_id = rep_id
        self._policy = policy or TravelPolicy()
        self._check_ins: dict[str, VisitEvent] = {}
        self._check_outs: dict[str, VisitCheckOutEvent] = {}
        self._verified: dict[str, Verification] = {}
        self._returned: dict[str, VisitRecord] = {}

    def __len__(self) -> int:
        return len(self._check_ins.keys() | self._check_outs.keys())

    def apply(self, parts: Iterable[VisitPart]) -> None:
        """Add check-ins and check-outs (each once per event_id; the caller deduplicates)."""
        for part in parts:
            if isinstance(part, VisitEvent):
                self._check_ins[part.event_id] = part
            else:
                known = self._check_outs.get(part.visit_id)
                if known is None or (part.occurred_at, part.event_id) > (known.occurred_at, known.event_id):
                    self._check_outs[part.visit_id] = part

    def has_check_in(self, visit_id: str) -> bool:
        return visit_id in self._check_ins

    def keep_verifications(self, verifications: Mapping[str, Verification]) -> None:
        """Fix the verification of stored visits (read back when the book is rebuilt)."""
        for visit_id, verification in verifications.items():
            if verification.status is not VisitStatus.UNLOCATED:
                self._verified[visit_id] = verification

    def mark_returned(
        self, accounts: Mapping[str, Account], stored_status: Mapping[str, VisitStatus]
    ) -> None:
        """Take the current rows as already stored (after a rebuild from stored events), except
        those whose status differs from ``stored_status`` (verified since, or never stored)."""
        self._returned = {
            visit_id: record
            for visit_id, record in self.records(accounts).items()
            if stored_status.get(visit_id) is record.status
        }

    def changed(self, accounts: Mapping[str, Account]) -> list[VisitRecord]:
        """The rows that differ from the ones last returned, by check-in time."""
        current = self.records(accounts)
        changed = [record for visit_id, record in current.items() if self._returned.get(visit_id) != record]
        self._returned = current
        return sorted(changed, key=lambda r: (r.checked_in_at, r.visit_id))

    def forget_before(self, moment: datetime) -> None:
        """Drop visits that started before ``moment`` (stored; outside the late-grace horizon)."""
        old = [
            visit_id
            for visit_id in self._check_ins.keys() | self._check_outs.keys()
            if self._start(visit_id) < moment
        ]
        for visit_id in old:
            self._check_ins.pop(visit_id, None)
            self._check_outs.pop(visit_id, None)
            self._verified.pop(visit_id, None)
            self._returned.pop(visit_id, None)

    def _start(self, visit_id: str) -> datetime:
        check_in = self._check_ins.get(visit_id)
        return check_in.occurred_at if check_in is not None else self._check_outs[visit_id].occurred_at

    def _verification(
        self, visit_id: str, position: _Position | None, account: Account | None
    ) -> tuple[Verification, float | None]:
        radius = account.geofence_m if account is not None else None
        fixed = self._verified.get(visit_id)
        if fixed is not None:
            return fixed, radius
        if position is None or account is None or not account.located:
            return UNLOCATED, radius
        verification = verify_at_account(account, position.lat, position.lon, position.accuracy_m)
        self._verified[visit_id] = verification
        return verification, radius

    def records(self, accounts: Mapping[str, Account]) -> dict[str, VisitRecord]:
        """Every visit of the book as a row, keyed by visit_id."""
        records: list[VisitRecord] = []
        for visit_id in sorted(self._check_ins.keys() | self._check_outs.keys()):
            check_in = self._check_ins.get(visit_id)
            check_out = self._check_outs.get(visit_id)
            account_id = (check_in.account_id if check_in is not None else None) or (
                check_out.account_id if check_out is not None else None
            )
            position = _position(check_in) or _position(check_out)
            verification, radius = self._verification(
                visit_id, position, accounts.get(account_id) if account_id is not None else None
            )
            if check_in is None:
                # An orphan check-out: placed at its own time, without a duration.
                checked_in_at = self._check_outs[visit_id].occurred_at
                checked_out_at: datetime | None = checked_in_at
            else:
                checked_in_at = check_in.occurred_at
                ends = [check_in.check_out_at, check_out.occurred_at if check_out is not None else None]
                # A check-out before its check-in is a clock problem on one side: the visit stays
                # open (no duration) rather than getting a negative one.
                checked_out_at = max((t for t in ends if t is not None and t >= checked_in_at), default=None)
            records.append(
                VisitRecord(
                    visit_id=visit_id,
                    rep_id=self.rep_id,
                    account_id=account_id,
                    checked_in_at=checked_in_at,
                    checked_out_at=checked_out_at,
                    status=verification.status,
                    distance_m=verification.distance_m,
                    radius_m=radius,
                    lat=position.lat if position else None,
                    lon=position.lon if position else None,
                    accuracy_m=position.accuracy_m if position else None,
                    check_in_missing=check_in is None,
                )
            )
        return {record.visit_id: record for record in self._flag(records)}

    def _flag(self, records: list[VisitRecord]) -> list[VisitRecord]:
        """Overlaps and impossible travel, between visits that have a check-in."""
        visits = sorted(
            (r for r in records if not r.check_in_missing), key=lambda r: (r.checked_in_at, r.visit_id)
        )
        overlapping: set[str] = set()
        latest_end: VisitRecord | None = None  # the visit reaching furthest so far
        for record in visits:
            if (
                latest_end is not None
                and latest_end.checked_out_at is not None
                and record.checked_in_at < latest_end.checked_out_at
            ):
                overlapping.update((record.visit_id, latest_end.visit_id))
            end = record.checked_out_at
            if end is not None and (
                latest_end is None or latest_end.checked_out_at is None or end > latest_end.checked_out_at
            ):
                latest_end = record
        travel: dict[str, tuple[bool, float]] = {}
        previous: VisitRecord | None = None
        for record in visits:
            if record.lat is None or record.lon is None:
                continue
            if previous is not None and previous.lat is not None and previous.lon is not None:
                left_at = previous.checked_out_at or previous.checked_in_at
                if left_at > record.checked_in_at:  # overlapping: measure from the check-in
                    left_at = previous.checked_in_at
                seconds = (record.checked_in_at - left_at).total_seconds()
                distance = haversine_m(previous.lat, previous.lon, record.lat, record.lon)
                slack = (previous.accuracy_m or 0.0) + (record.accuracy_m or 0.0) + self._policy.slack_m
                flagged = impossible_travel(
                    distance, seconds, max_speed_kmh=self._policy.max_speed_kmh, slack_m=slack
                )
                travel[record.visit_id] = (flagged, implied_speed_kmh(distance, seconds))
            previous = record
        flagged_records = []
        for record in records:
            flagged, speed = travel.get(record.visit_id, (False, None))
            flagged_records.append(
                replace(
                    record,
                    overlaps=record.visit_id in overlapping,
                    impossible_travel=flagged,
                    # No time at all between two places: flagged, with no finite speed to show.
                    travel_speed_kmh=None if speed is None or math.isinf(speed) else speed,
                )
            )
        return flagged_records
