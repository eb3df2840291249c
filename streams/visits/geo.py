"""Distances on the Earth and the verification of a reported position against an account.

Haversine on a sphere of the Earth's mean radius: within 0.5 % of the ellipsoidal (WGS 84)
distance everywhere, i.e. under a metre across any geofence, which is far below GPS error. The
formula is the numerically stable one for short distances, it needs nothing special at the
antimeridian (longitudes enter only through sin² of half their difference) or at the poles, and
the clamp keeps rounding from taking asin outside its domain for antipodal points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from schemas.accounts import Account

# IUGG mean Earth radius R1 = (2a + b) / 3, in metres.
EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance in metres between two positions in decimal degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, h))))


class VisitStatus(StrEnum):
    VERIFIED = "verified"
    OUT_OF_RANGE = "out_of_range"
    UNLOCATED = "unlocated"


@dataclass(frozen=True, slots=True)
class Verification:
    """``distance_m`` is from the reported position to the account (None when unlocated)."""

    status: VisitStatus
    distance_m: float | None = None


UNLOCATED = Verification(VisitStatus.UNLOCATED)


def accuracy_allowance_m(accuracy_m: float | None, radius_m: float) -> float:
    """How much farther than the radius a position may be and still verify.

    A position with accuracy ``a`` means "within ``a`` metres of here" (the device's 68 %
    circle): a visit is verified when that circle reaches the geofence. The allowance is capped at
    the radius itself, so a coarse fix (a cell-tower position, accuracy in kilometres) cannot
    verify a visit from across town: at worst the geofence is doubled. A position without an
    accuracy is taken as exact (no allowance).
    """
    if accuracy_m is None:
        return 0.0
    return min(accuracy_m, radius_m)


def verify_position(
    lat: float | None,
    lon: float | None,
    accuracy_m: float | None,
    account_lat: float | None,
    account_lon: float | None,
    radius_m: float,
) -> Verification:
    """``verified`` within ``radius_m`` (+ the accuracy allowance) of the account,
    ``out_of_range`` farther, ``unlocated`` when the visit or the account has no position."""
    if lat is None or lon is None or account_lat is None or account_lon is None:
        return UNLOCATED
    distance = haversine_m(lat, lon, account_lat, account_lon)
    if distance <= radius_m + accuracy_allowance_m(accuracy_m, radius_m):
        return Verification(VisitStatus.VERIFIED, distance)
    return Verification(VisitStatus.OUT_OF_RANGE, distance)


def verify_at_account(
    account: Account | None, lat: float | None, lon: float | None, accuracy_m: float | None
) -> Verification:
    """``verify_position`` against an account record (its geofence, or the default radius);
    ``unlocated`` without an account."""
    if account is None:
        return UNLOCATED
    return verify_position(lat, lon, accuracy_m, account.lat, account.lon, account.geofence_m)


def implied_speed_kmh(distance_m: float, seconds: float) -> float:
    """The speed needed to cover ``distance_m`` in ``seconds`` (infinite for no time at all)."""
    if distance_m <= 0:
        return 0.0
    if seconds <= 0:
        return math.inf
    return distance_m / seconds * 3.6


def impossible_travel(
    distance_m: float,
    seconds: float,
    *,
    max_speed_kmh: float,
    slack_m: float,
) -> bool:
    """Whether going ``distance_m`` in ``seconds`` needs more than ``max_speed_kmh``.

    ``slack_m`` (the two positions' accuracies plus a fixed margin) is taken off the distance
    first: two fixes of the same car park a minute apart are not a teleport.
    """
    return implied_speed_kmh(max(0.0, distance_m - slack_m), seconds) > max_speed_kmh
