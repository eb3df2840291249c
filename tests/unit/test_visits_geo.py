"""Distances and check-in verification against known distances, and against an independent
formula (the chord of the two positions as 3-D unit vectors) for arbitrary positions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.accounts import DEFAULT_RADIUS_M, Account
from streams.visits.geo import (
    EARTH_RADIUS_M,
    VisitStatus,
    accuracy_allowance_m,
    haversine_m,
    implied_speed_kmh,
    impossible_travel,
    verify_at_account,
    verify_position,
)

ONE_DEGREE_M = EARTH_RADIUS_M * math.pi / 180  # 111 195.08 m on the mean-radius sphere


def chord_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    def unit(lat: float, lon: float) -> tuple[float, float, float]:
        phi, lam = math.radians(lat), math.radians(lon)
        return (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))

    a, b = unit(lat1, lon1), unit(lat2, lon2)
    chord = math.dist(a, b)
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, chord / 2))


@pytest.mark.parametrize(
    ("a", "b", "expected_m", "tolerance_m"),
    [
        ((0.0, 0.0), (0.0, 0.0), 0.0, 1e-9),
        ((0.0, 0.0), (1.0, 0.0), ONE_DEGREE_M, 1e-6),  # one degree of latitude
        ((0.0, 0.0), (0.0, 90.0), EARTH_RADIUS_M * math.pi / 2, 1e-3),  # a quarter of the equator
        ((90.0, 0.0), (-90.0, 0.0), EARTH_RADIUS_M * math.pi, 1e-3),  # pole to pole
        ((0.0, 0.0), (0.0, 180.0), EARTH_RADIUS_M * math.pi, 1e-3),  # antipodes on the equator
        # across the antimeridian: 0.002 degrees apart, not 359.998
        ((0.0, 179.999), (0.0, -179.999), 0.002 * ONE_DEGREE_M, 1e-3),
        ((-16.5, 180.0), (-16.5, -180.0), 0.0, 1e-6),  # the same meridian written two ways
        # at the poles longitude means nothing
        ((90.0, 0.0), (90.0, 123.0), 0.0, 1e-6),
        ((-90.0, -45.0), (-90.0, 170.0), 0.0, 1e-6),
        # across the pole: 0.001 degrees up to it and 0.001 down the other side
        ((89.999, 0.0), (89.999, 180.0), 0.002 * ONE_DEGREE_M, 1e-3),
        # Paris to London (geodesic 343.9 km; the sphere is within 0.5 %)
        ((48.8566, 2.3522), (51.5074, -0.1278), 343_900.0, 343_900.0 * 0.005),
    ],
)
def test_known_distances(
    a: tuple[float, float], b: tuple[float, float], expected_m: float, tolerance_m: float
) -> None:
    assert haversine_m(*a, *b) == pytest.approx(expected_m, abs=tolerance_m)
    assert haversine_m(*b, *a) == pytest.approx(expected_m, abs=tolerance_m)


latitudes = st.floats(min_value=-90, max_value=90, allow_nan=False)
longitudes = st.floats(min_value=-180, max_value=180, allow_nan=False)


@given(latitudes, longitudes, latitudes, longitudes)
def test_haversine_agrees_with_the_chord_formula(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    distance = haversine_m(lat1, lon1, lat2, lon2)
    assert 0.0 <= distance <= EARTH_RADIUS_M * math.pi + 1e-6
    # The chord formula loses precision for tiny distances; a millimetre is far below GPS error.
    assert distance == pytest.approx(chord_distance_m(lat1, lon1, lat2, lon2), abs=1e-3, rel=1e-9)


@given(latitudes, longitudes, latitudes, longitudes, latitudes, longitudes)
def test_triangle_inequality(
    lat1: float, lon1: float, lat2: float, lon2: float, lat3: float, lon3: float
) -> None:
    direct = haversine_m(lat1, lon1, lat3, lon3)
    assert direct <= haversine_m(lat1, lon1, lat2, lon2) + haversine_m(lat2, lon2, lat3, lon3) + 1e-3


# A point 0.001 degrees of latitude north of the account: 111.2 m away.
ACCOUNT = (48.0, 11.0)
NORTH_111M = (48.001, 11.0)


def test_verified_within_the_radius() -> None:
    result = verify_position(*NORTH_111M, 10.0, *ACCOUNT, radius_m=150.0)
    assert result.status is VisitStatus.VERIFIED
    assert result.distance_m == pytest.approx(0.001 * ONE_DEGREE_M, abs=1e-6)


def test_out_of_range_reports_the_distance() -> None:
    result = verify_position(*NORTH_111M, 0.0, *ACCOUNT, radius_m=100.0)
    assert result.status is VisitStatus.OUT_OF_RANGE
    assert result.distance_m == pytest.approx(111.195, abs=1e-3)


def test_accuracy_reaching_the_geofence_verifies() -> None:
    # 111.2 m away, radius 100 m: a 12 m accuracy circle reaches the geofence, 11 m does not.
    assert verify_position(*NORTH_111M, 12.0, *ACCOUNT, radius_m=100.0).status is VisitStatus.VERIFIED
    assert verify_position(*NORTH_111M, 11.0, *ACCOUNT, radius_m=100.0).status is VisitStatus.OUT_OF_RANGE


def test_missing_accuracy_is_taken_as_exact() -> None:
    assert accuracy_allowance_m(None, 100.0) == 0.0
    assert verify_position(*NORTH_111M, None, *ACCOUNT, radius_m=100.0).status is VisitStatus.OUT_OF_RANGE
    assert verify_position(*NORTH_111M, None, *ACCOUNT, radius_m=112.0).status is VisitStatus.VERIFIED


def test_a_coarse_fix_cannot_verify_from_far_away() -> None:
    # 5 km accuracy (a cell-tower fix) 1.1 km away: the allowance is capped at the radius.
    far = (48.01, 11.0)
    assert accuracy_allowance_m(5_000.0, 150.0) == 150.0
    result = verify_position(*far, 5_000.0, *ACCOUNT, radius_m=150.0)
    assert result.status is VisitStatus.OUT_OF_RANGE
    assert result.distance_m == pytest.approx(0.01 * ONE_DEGREE_M, abs=1e-3)


@pytest.mark.parametrize(
    "positions",
    [
        (None, None, *ACCOUNT),
        (*NORTH_111M, None, None),
        (None, None, None, None),
    ],
)
def test_unlocated_when_either_side_has_no_position(positions: tuple[float | None, ...]) -> None:
    lat, lon, account_lat, account_lon = positions
    result = verify_position(lat, lon, 5.0, account_lat, account_lon, radius_m=150.0)
    assert result.status is VisitStatus.UNLOCATED
    assert result.distance_m is None


def test_verification_across_the_antimeridian_and_at_a_pole() -> None:
    # Fiji straddles 180°: 50 m apart on either side of it.
    assert (
        verify_position(-17.0, 179.9998, 5.0, -17.0, -179.99975, radius_m=150.0).status
        is VisitStatus.VERIFIED
    )
    # A research station at the South Pole: any longitude is the same place.
    assert verify_position(-90.0, 0.0, 5.0, -90.0, 139.27, radius_m=50.0).status is VisitStatus.VERIFIED


def test_impossible_travel() -> None:
    # 100 km in 30 minutes needs 200 km/h.
    assert implied_speed_kmh(100_000.0, 1800.0) == pytest.approx(200.0)
    assert impossible_travel(100_000.0, 1800.0, max_speed_kmh=130.0, slack_m=1_000.0)
    # 100 km in an hour is a motorway drive.
    assert not impossible_travel(100_000.0, 3600.0, max_speed_kmh=130.0, slack_m=1_000.0)
    # GPS jitter across a car park in no time at all is not a teleport...
    assert not impossible_travel(300.0, 0.0, max_speed_kmh=130.0, slack_m=1_000.0)
    # ...but 5 km in no time is.
    assert impossible_travel(5_000.0, 0.0, max_speed_kmh=130.0, slack_m=1_000.0)
    assert implied_speed_kmh(0.0, 0.0) == 0.0
    assert math.isinf(implied_speed_kmh(1.0, 0.0))


def test_verification_against_an_account_record_uses_its_geofence_or_the_default() -> None:
    fenced = Account(account_id="a", name="A", lat=48.0, lon=11.0, radius_m=100.0)
    default = Account(account_id="b", name="B", lat=48.0, lon=11.0)
    assert verify_at_account(fenced, *NORTH_111M, None).status is VisitStatus.OUT_OF_RANGE
    assert (
        DEFAULT_RADIUS_M > 112
        and verify_at_account(default, *NORTH_111M, None).status is VisitStatus.VERIFIED
    )
    assert verify_at_account(None, *NORTH_111M, 5.0).status is VisitStatus.UNLOCATED
    assert (
        verify_at_account(Account(account_id="c", name="C"), *NORTH_111M, 5.0).status is VisitStatus.UNLOCATED
    )
