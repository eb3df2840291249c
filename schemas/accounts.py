"""Customer accounts: where a customer is, so a field visit can be checked against it.

An account is loaded with ``salespulse import accounts`` and stored in ClickHouse (``accounts``,
the newest record of an account wins). Its position and geofence radius decide whether a visit
reported there is ``verified``; its owner defines "the rep's assigned accounts" (coverage KPIs and
the key-account alert); its segment marks key accounts.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.events import MAX_ID_LENGTH

# The geofence of an account imported without a radius: a customer site (building, car park,
# gate) fits in it, and consumer GPS outdoors is usually within 5-50 m.
DEFAULT_RADIUS_M = 150.0
MAX_RADIUS_M = 50_000.0

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)]


class Account(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: Key
    name: Name
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    radius_m: Annotated[float, Field(gt=0, le=MAX_RADIUS_M, allow_inf_nan=False)] | None = None
    segment: Key | None = None
    owner_rep_id: Key | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Account:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together")
        return self

    @property
    def located(self) -> bool:
        return self.lat is not None and self.lon is not None

    @property
    def geofence_m(self) -> float:
        """The radius a visit must be within: the account's own, or ``DEFAULT_RADIUS_M``."""
        return self.radius_m if self.radius_m is not None else DEFAULT_RADIUS_M


__all__ = ["DEFAULT_RADIUS_M", "MAX_RADIUS_M", "Account"]
