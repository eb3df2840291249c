"""Rep records: who a rep is, which team and territory their numbers roll up into, and their quota."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from schemas.events import MAX_ID_LENGTH, _valid_amount

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)]

# Events from reps that have not been loaded yet are still counted; they roll up here until the
# rep record arrives (the team is looked up at query time, so they move over by themselves).
UNASSIGNED = "unassigned"


class ManagementMode(StrEnum):
    """How a rep is managed: on activity floors (developing) or on outcomes (seasoned)."""

    AUTO = "auto"
    DEVELOPING = "developing"
    SEASONED = "seasoned"


class Rep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rep_id: Key
    name: Name
    team: Key
    territory: Key
    manager: Name | None = None
    hired_at: date | None = None
    quota_monthly: Annotated[Decimal, AfterValidator(_valid_amount)] = Decimal("0.00")
    mode: ManagementMode = ManagementMode.AUTO
