"""Configuration of the early-warning rules: thresholds, windows, volume guards, working calendars.

One :class:`AlertRulesConfig` holds every rule's settings, with defaults that are safe to run on
a real org without tuning. It is plain pydantic, loaded from a mapping (``model_validate``) or a
YAML document (:meth:`AlertRulesConfig.from_yaml`); anything left out keeps its default, and a
misspelt key is an error rather than a setting silently ignored.

The rule engine itself (``streams.alerts.rules``) reads these objects and nothing else; it never
reads the environment or a clock.

Severities are plain strings here (``info``, ``warning``, ``critical``): ``schemas`` imports
nothing of ours, so the engine maps them onto its own ``Severity`` enum.
"""

from __future__ import annotations

from datetime import date, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from schemas.events import ACTIVITY_TYPES, DEAL_TYPES
from schemas.reps import ManagementMode

SeverityName = Literal["info", "warning", "critical"]
# Which management style a rep rule belongs to. A rule in the rep's focus alerts at its
# ``severity``; outside it, at ``off_focus_severity`` (informational by default). "always" rules
# ignore the mode.
RuleFocus = Literal["activity", "outcome", "always"]

# The daily counters a rule may name: every event type, plus the derived connected-call counter
# (``streams.kpi.activity.CALL_CONNECTED``; repeated here because schemas imports nothing of ours).
COUNTER_NAMES: tuple[str, ...] = (*ACTIVITY_TYPES, *DEAL_TYPES, "call_connected")
SCORE = "score"

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _known_counter(name: str) -> str:
    if name not in COUNTER_NAMES:
        raise ValueError(f"unknown counter {name!r}: use one of {', '.join(COUNTER_NAMES)}")
    return name


def _weekday_numbers(value: Any) -> Any:
    """Working days as weekday numbers (Monday = 0), from numbers or names ("mon", "Monday")."""
    if not isinstance(value, list | tuple | set | frozenset):
        return value
    days: list[Any] = []
    for day in value:
        if isinstance(day, str):
            short = day.strip().lower()[:3]
            if short not in _WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r}: use mon, tue, ... sun (or 0-6, Monday = 0)")
            days.append(_WEEKDAYS.index(short))
        else:
            days.append(day)
    return days


def _valid_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin") from error
    return name


CounterName = Annotated[str, BeforeValidator(_known_counter)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Weekdays = Annotated[frozenset[Annotated[int, Field(ge=0, le=6)]], BeforeValidator(_weekday_numbers)]
TimeZoneName = Annotated[str, BeforeValidator(_valid_timezone)]
Days = Annotated[int, Field(ge=1, le=730)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hysteresis(fire_below: float, resolve_above: float) -> None:
    if resolve_above < fire_below:
        raise ValueError(
            f"resolve_above ({resolve_above}) must not be below fire_below ({fire_below}): "
            "an alert has to recover past its firing threshold to resolve"
        )


# --- Working calendars --------------------------------------------------------------------------------


class WorkingCalendar(_Model):
    """When a team works, in its own time zone. Used to count idle working hours and working days."""

    timezone: TimeZoneName = "UTC"
    working_days: Weekdays = frozenset(range(5))
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: frozenset[date] = frozenset()

    @model_validator(mode="after")
    def _consistent(self) -> WorkingCalendar:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are local times of the calendar's time zone: give no offset")
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start}) on the same day")
        if not self.working_days:
            raise ValueError("working_days must name at least one day")
        return self

    @property
    def hours_per_day(self) -> float:
        return (self.end.hour * 60 + self.end.minute - self.start.hour * 60 - self.start.minute) / 60

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.working_days and day not in self.holidays


class TeamCalendar(_Model):
    """A team's differences from the org calendar; what is left out is taken from it."""

    timezone: TimeZoneName | None = None
    working_days: Weekdays | None = None
    start: time | None = None
    end: time | None = None
    holidays: frozenset[date] | None = None


# --- Rules --------------------------------------------------------------------------------------------


class RuleConfig(_Model):
    """What every rule has: a switch and the severity it alerts at."""

    enabled: bool = True
    severity: SeverityName = "warning"


class RepRuleConfig(RuleConfig):
    """A rule about one rep: its severity also depends on how the rep is managed (see RuleFocus)."""

    focus: RuleFocus = "always"
    off_focus_severity: SeverityName = "info"


DEFAULT_DROP_TYPES: tuple[str, ...] = (
    "call",
    "email",
    "meeting_scheduled",
    "meeting_held",
    "visit",
    "demo",
    "proposal_sent",
)
# What a unit of each activity is worth in the score: booked and held meetings, demos and
# proposals move deals, so one of them outweighs a handful of calls or emails.
DEFAULT_SCORE_WEIGHTS: dict[str, float] = {
    "call": 1.0,
    "email": 0.5,
    "meeting_scheduled": 3.0,
    "meeting_held": 4.0,
    "visit": 3.0,
    "demo": 4.0,
    "proposal_sent": 6.0,
}


class ActivityWindows(_Model):
    """A rolling window of activity against the trailing baseline just before it."""

    window_days: Days = 7
    # Best a multiple of window_days: whole weeks in both keep weekends out of the comparison.
    baseline_days: Days = 28
    fire_below: Fraction = 0.6
    resolve_above: Annotated[float, Field(gt=0, le=2)] = 0.8
    types: tuple[CounterName, ...] = DEFAULT_DROP_TYPES
    weights: dict[CounterName, Annotated[float, Field(ge=0, le=1000)]] = Field(
        default_factory=lambda: dict(DEFAULT_SCORE_WEIGHTS)
    )
    # Minimum volume: a type (or the score) whose baseline, scaled to one window, is below this is
    # not judged. Ten calls a week falling to five is noise, not news.
    min_baseline_count: Annotated[float, Field(ge=0)] = 20.0
    min_baseline_score: Annotated[float, Field(ge=0)] = 40.0
    score_enabled: bool = True
    # A day without any of the rep's own outreach (calls, emails, visits) is a day off (leave,
    # sickness, a holiday) far more often than a slump, and no_activity covers silence. With
    # skip_idle_days such days are left out of both the window and the baseline, and the baseline
    # is scaled to the days worked; a window without a day worked is compared as it is.
    skip_idle_days: bool = True
    idle_day_counters: tuple[CounterName, ...] = ("call", "email", "visit")

    @model_validator(mode="after")
    def _consistent(self) -> ActivityWindows:
        _check_hysteresis(self.fire_below, self.resolve_above)
        if self.skip_idle_days and not self.idle_day_counters:
            raise ValueError("skip_idle_days needs idle_day_counters (the outreach a day worked has)")
        if self.score_enabled and not any(weight > 0 for weight in self.weights.values()):
            raise ValueError(
                "the activity score needs at least one positive weight (or score_enabled: false)"
            )
        return self


class ActivityDropRule(ActivityWindows, RepRuleConfig):
    """``activity_drop`` for one rep: own trailing baseline, or far below the team's median."""

    focus: RuleFocus = "activity"
    # The rep's score below this fraction of the median score of their team (same window) fires
    # too; None turns the comparison off. Only the score is compared across reps: per-type
    # volumes differ by role (a field rep visits, an inside rep calls).
    team_median_fraction: Fraction | None = 0.5
    team_median_resolve_above: Annotated[float, Field(gt=0, le=2)] = 0.65
    min_team_reps: Annotated[int, Field(ge=2)] = 3

    @model_validator(mode="after")
    def _team_hysteresis(self) -> ActivityDropRule:
        if self.team_median_fraction is not None:
            _check_hysteresis(self.team_median_fraction, self.team_median_resolve_above)
        return self


class GroupActivityDropRule(ActivityWindows, RuleConfig):
    """``activity_drop`` for a team or territory: the sum of its reps against its own baseline.

    A whole team down by a third is news, so the group thresholds are tighter than a rep's."""

    fire_below: Fraction = 0.7
    resolve_above: Annotated[float, Field(gt=0, le=2)] = 0.85
    # Sums of reps are steadier than one rep, but a team's visits or meetings are still a few dozen
    # a week: judge types only where the volume makes a third less mean something.
    min_baseline_count: Annotated[float, Field(ge=0)] = 100.0
    min_baseline_score: Annotated[float, Field(ge=0)] = 200.0


class FunnelStep(_Model):
    numerator: CounterName
    denominator: CounterName
    # Minimum volume in the window and in the baseline; below either the step is not judged.
    min_denominator: Annotated[int, Field(ge=1)] = 15
    min_baseline_denominator: Annotated[int, Field(ge=1)] = 30


DEFAULT_FUNNEL_STEPS: dict[str, FunnelStep] = {
    "call_to_meeting_scheduled": FunnelStep(
        numerator="meeting_scheduled", denominator="call", min_denominator=100, min_baseline_denominator=300
    ),
    "scheduled_to_held": FunnelStep(numerator="meeting_held", denominator="meeting_scheduled"),
    "held_to_proposal": FunnelStep(numerator="proposal_sent", denominator="meeting_held"),
    "proposal_to_won": FunnelStep(numerator="deal_won", denominator="proposal_sent"),
    "created_to_won": FunnelStep(numerator="deal_won", denominator="deal_created"),
}


class ConversionDropRule(RepRuleConfig):
    """``conversion_drop``: a funnel step's conversion in the window against the rep's baseline."""

    focus: RuleFocus = "outcome"
    window_days: Days = 28
    baseline_days: Days = 56
    fire_below: Fraction = 0.6
    resolve_above: Annotated[float, Field(gt=0, le=2)] = 0.8
    steps: dict[str, FunnelStep] = Field(default_factory=lambda: dict(DEFAULT_FUNNEL_STEPS))
    # A new alert also needs the drop to be unlikely under an unchanged rate (a one-sided exact
    # test of window against baseline, both being samples): 2 meetings from 30 calls instead of 4
    # happens by chance all the time, and a dozen reps x five steps are tested every day. At 0.01,
    # 23% of stable synthetic reps got a conversion_drop over 180 days; at 0.001, 2% (the fading
    # reps are caught by activity_drop either way; bench/backtest_synthetic.py). None turns it off.
    max_p_value: Annotated[float, Field(gt=0, le=1)] | None = 0.001

    @model_validator(mode="after")
    def _consistent(self) -> ConversionDropRule:
        _check_hysteresis(self.fire_below, self.resolve_above)
        return self


class NoActivityRule(RepRuleConfig):
    """``no_activity``: nothing logged for this many working hours of the rep's team calendar."""

    working_hours: Annotated[float, Field(gt=0, le=2000)] = 16.0
    # A rep who never logged anything has no data rather than no activity; with this on they are
    # measured from the start of their hire day instead (and skipped without a hire date).
    alert_without_history: bool = False


class CoverageThresholds(_Model):
    # k: open pipeline must cover k x the quota still to close this month.
    min_coverage: Annotated[float, Field(gt=0, le=100)] = 3.0
    resolve_above: Annotated[float, Field(gt=0, le=100)] = 3.5

    @model_validator(mode="after")
    def _consistent(self) -> CoverageThresholds:
        _check_hysteresis(self.min_coverage, self.resolve_above)
        return self


class PipelineCoverageRule(CoverageThresholds, RepRuleConfig):
    """``pipeline_coverage_low`` for one rep."""

    focus: RuleFocus = "outcome"


class GroupPipelineCoverageRule(CoverageThresholds, RuleConfig):
    """``pipeline_coverage_low`` for a team or territory (sums of its reps' pipeline and quota)."""


DEFAULT_PACING_FUNNEL: tuple[str, ...] = (
    "call",
    "meeting_scheduled",
    "meeting_held",
    "proposal_sent",
    "deal_won",
)


class PacingForecastRule(RepRuleConfig):
    """``pacing_forecast``: this month's revenue projected from the current pace and own rates."""

    focus: RuleFocus = "outcome"
    # Activity pace: the top of the funnel per working day over these last days.
    pace_days: Days = 14
    # The rep's own conversion rates and deal size, over these last days.
    rates_days: Days = 84
    funnel: tuple[CounterName, ...] = DEFAULT_PACING_FUNNEL
    fire_below: Annotated[float, Field(gt=0, le=2)] = 0.9
    resolve_above: Annotated[float, Field(gt=0, le=2)] = 1.0
    # No forecast without enough history to have rates.
    min_wins: Annotated[int, Field(ge=1)] = 3
    min_top_count: Annotated[int, Field(ge=1)] = 100

    @field_validator("funnel")
    @classmethod
    def _ends_in_wins(cls, funnel: tuple[str, ...]) -> tuple[str, ...]:
        if len(funnel) < 2 or funnel[-1] != "deal_won":
            raise ValueError("funnel must have at least two steps and end with deal_won")
        if len(set(funnel)) != len(funnel):
            raise ValueError("funnel steps must be different counters")
        return funnel

    @model_validator(mode="after")
    def _consistent(self) -> PacingForecastRule:
        _check_hysteresis(self.fire_below, self.resolve_above)
        return self


class StalledDealsRule(RepRuleConfig):
    """``stalled_deals``: open deals that have not moved for a multiple of the rep's typical cycle."""

    focus: RuleFocus = "outcome"
    cycle_multiple: Annotated[float, Field(gt=0, le=100)] = 2.0
    # The typical cycle is the median cycle of the rep's deals won in this lookback, when there are
    # enough of them; otherwise the default.
    default_cycle_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    min_won_deals: Annotated[int, Field(ge=1)] = 3
    cycle_lookback_days: Days = 180
    # What counts as moving: a stage change (or the creation), or any event of the deal.
    measure: Literal["stage_change", "any_event"] = "stage_change"


# --- Field visits -------------------------------------------------------------------------------------


class FieldActivityDropRule(RepRuleConfig):
    """``field_activity_drop``: a field rep's verified visits over the window against their own
    trailing baseline (scaled to the window)."""

    focus: RuleFocus = "activity"
    window_days: Days = 7
    baseline_days: Days = 28
    fire_below: Fraction = 0.6
    resolve_above: Annotated[float, Field(gt=0, le=2)] = 0.8
    # Reps with fewer verified visits than this per window in their baseline are not field reps.
    min_baseline_visits: Annotated[float, Field(ge=0)] = 4.0

    @model_validator(mode="after")
    def _consistent(self) -> FieldActivityDropRule:
        _check_hysteresis(self.fire_below, self.resolve_above)
        return self


class LowVerifiedShareRule(RepRuleConfig):
    """``low_verified_share``: too few of a rep's visits over the window were verified at the
    customer (out of range or unlocated instead)."""

    window_days: Days = 14
    fire_below: Fraction = 0.7
    resolve_above: Fraction = 0.8
    min_visits: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _consistent(self) -> LowVerifiedShareRule:
        _check_hysteresis(self.fire_below, self.resolve_above)
        return self


class KeyAccountsNotVisitedRule(RepRuleConfig):
    """``key_accounts_not_visited``: accounts assigned to the rep in a key segment without a
    verified visit for ``days``."""

    days: Days = 30
    segments: tuple[str, ...] = ("key",)


class NoCheckInRule(RepRuleConfig):
    """``no_check_in``: a field rep without a check-in by ``by`` (local time of the team calendar)
    on a working day. Evaluated on the alerter's timer, so it fires while nothing arrives."""

    focus: RuleFocus = "activity"
    by: time = time(11, 0)
    # A field rep: check-ins on at least ``field_rep_days`` of the last ``lookback_working_days``.
    field_rep_days: Annotated[int, Field(ge=1)] = 3
    lookback_working_days: Annotated[int, Field(ge=1, le=60)] = 10

    @model_validator(mode="after")
    def _consistent(self) -> NoCheckInRule:
        if self.by.tzinfo is not None:
            raise ValueError("by is a local time of the team calendar: give no offset")
        if self.field_rep_days > self.lookback_working_days:
            raise ValueError("field_rep_days cannot exceed lookback_working_days")
        return self


class ModeConfig(_Model):
    """Management modes: developing reps on activity floors, seasoned reps on outcomes."""

    enabled: bool = True
    # ``mode: auto`` reps hired fewer days ago than this are developing.
    developing_tenure_days: Annotated[int, Field(ge=0, le=36500)] = 365
    # A seasoned rep below this share of quota for this many completed months in a row is managed
    # on activity (like a developing rep) until a month at or above it.
    attainment_floor: Annotated[float, Field(gt=0, le=10)] = 0.8
    missed_months: Annotated[int, Field(ge=1, le=24)] = 2
    # ``mode: auto`` without a hire date, and events of reps without a record.
    unknown_tenure: ManagementMode = ManagementMode.SEASONED

    @field_validator("unknown_tenure")
    @classmethod
    def _concrete(cls, mode: ManagementMode) -> ManagementMode:
        if mode is ManagementMode.AUTO:
            raise ValueError("unknown_tenure must be developing or seasoned")
        return mode


class AlertRulesConfig(_Model):
    """Every rule's settings. ``AlertRulesConfig()`` is a sensible default for a real org."""

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    calendar: WorkingCalendar = WorkingCalendar()
    team_calendars: dict[str, TeamCalendar] = Field(default_factory=dict)
    modes: ModeConfig = ModeConfig()

    activity_drop: ActivityDropRule = ActivityDropRule()
    conversion_drop: ConversionDropRule = ConversionDropRule()
    no_activity: NoActivityRule = NoActivityRule()
    pipeline_coverage_low: PipelineCoverageRule = PipelineCoverageRule()
    pacing_forecast: PacingForecastRule = PacingForecastRule()
    stalled_deals: StalledDealsRule = StalledDealsRule()
    team_activity_drop: GroupActivityDropRule = GroupActivityDropRule()
    territory_activity_drop: GroupActivityDropRule = GroupActivityDropRule()
    team_pipeline_coverage_low: GroupPipelineCoverageRule = GroupPipelineCoverageRule()
    territory_pipeline_coverage_low: GroupPipelineCoverageRule = GroupPipelineCoverageRule()
    field_activity_drop: FieldActivityDropRule = FieldActivityDropRule()
    low_verified_share: LowVerifiedShareRule = LowVerifiedShareRule()
    key_accounts_not_visited: KeyAccountsNotVisitedRule = KeyAccountsNotVisitedRule()
    no_check_in: NoCheckInRule = NoCheckInRule()

    @model_validator(mode="after")
    def _team_calendars_valid(self) -> AlertRulesConfig:
        for team in self.team_calendars:
            try:
                self.calendar_for(team)
            except ValueError as error:
                raise ValueError(f"team_calendars[{team!r}] with the org calendar: {error}") from error
        return self

    @classmethod
    def from_yaml(cls, text: str) -> AlertRulesConfig:
        """The config in a YAML document (an empty document is the default config)."""
        data = yaml.safe_load(text)
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError("an alert rules document must be a mapping of settings")
        return cls.model_validate(data)

    def calendar_for(self, team: str | None) -> WorkingCalendar:
        """The org calendar with the team's differences applied."""
        override = self.team_calendars.get(team) if team is not None else None
        if override is None:
            return self.calendar
        merged = {**self.calendar.model_dump(), **override.model_dump(exclude_none=True)}
        return WorkingCalendar.model_validate(merged)

    @property
    def history_days(self) -> int:
        """How many days of daily counters before the day of ``now`` the rules read."""
        needs = [
            self.activity_drop.window_days + self.activity_drop.baseline_days,
            self.team_activity_drop.window_days + self.team_activity_drop.baseline_days,
            self.territory_activity_drop.window_days + self.territory_activity_drop.baseline_days,
            self.conversion_drop.window_days + self.conversion_drop.baseline_days,
            self.pacing_forecast.rates_days,
            self.pacing_forecast.pace_days,
        ]
        return max(needs)

    @property
    def visit_history_days(self) -> int:
        """How many days of visits before ``now`` the field-visit rules read."""
        return max(
            self.field_activity_drop.window_days + self.field_activity_drop.baseline_days,
            self.low_verified_share.window_days,
            self.key_accounts_not_visited.days,
            # working days back, with weekends and a holiday or two
            2 * self.no_check_in.lookback_working_days + 7,
        )

    @property
    def deal_history_days(self) -> int:
        """How far back closed deals are read (cycle times, deal sizes, months of attainment)."""
        months = (self.modes.missed_months + 1) * 31
        return max(self.stalled_deals.cycle_lookback_days, self.pacing_forecast.rates_days, months)


__all__ = [
    "COUNTER_NAMES",
    "DEFAULT_DROP_TYPES",
    "DEFAULT_FUNNEL_STEPS",
    "DEFAULT_PACING_FUNNEL",
    "DEFAULT_SCORE_WEIGHTS",
    "SCORE",
    "ActivityDropRule",
    "ActivityWindows",
    "AlertRulesConfig",
    "ConversionDropRule",
    "CoverageThresholds",
    "FieldActivityDropRule",
    "FunnelStep",
    "GroupActivityDropRule",
    "GroupPipelineCoverageRule",
    "KeyAccountsNotVisitedRule",
    "LowVerifiedShareRule",
    "ModeConfig",
    "NoActivityRule",
    "NoCheckInRule",
    "PacingForecastRule",
    "PipelineCoverageRule",
    "RepRuleConfig",
    "RuleConfig",
    "RuleFocus",
    "SeverityName",
    "StalledDealsRule",
    "TeamCalendar",
    "WorkingCalendar",
]
