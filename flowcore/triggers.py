"""Triggers of a template workflow: what users submit, what is stored, and the pure decisions.

A trigger belongs to a *template* workflow. Each fire creates a new workflow from the template's
definition, with an input made of (shallow merge, later wins) the template's input, the trigger's
``input_data`` and what the fire carries: an event's payload or a webhook's body. A payload that is
not a JSON object is put under the key ``payload``.

Types: ``schedule`` (cron in a timezone, see :mod:`flowcore.cron`), ``event`` (an event type and a
filter, see :mod:`flowcore.eventfilter`), ``webhook`` (a signed HTTP delivery, see
:mod:`flowcore.signatures`) and ``manual`` (fired only by hand). Any trigger can be fired by hand.
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentainer_flow.models import TriggerType as TriggerType
from flowcore import cron, eventfilter
from flowcore.durations import DurationS
from flowcore.errors import InvalidInput
from flowcore.flowcontrol import MAX_PRIORITY, MIN_PRIORITY, Overlap
from flowcore.signatures import DEFAULT_DELIVERY_HEADER, DEFAULT_GENERIC_HEADER, SignaturePreset, WebhookAuth

SECRET_MASK = "********"


class CatchUp(str, enum.Enum):
    """What a schedule does with the fires it missed while no scheduler ran."""

    SKIP = "skip"  # count them as skipped, run at the next time
    RUN_ONCE = "run_once"  # run once now for all of them


class TriggerOptions(BaseModel):
    """A trigger's ``config``."""

    model_config = ConfigDict(extra="forbid")

    event_type: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/-]+$")
    event_filter: dict[str, Any] = Field(default_factory=dict)
    skip_if_running: bool = Field(False, description="Skip (and count) a fire while a run of this trigger is active.")
    overlap: Overlap | None = Field(
        None,
        description="A fire while a run of this trigger is active: skip (= skip_if_running), buffer_one, "
        "buffer_all, cancel_other or allow_all (the default). Scheduled, event and manual fires alike (ADR 013).",
    )
    priority: int | None = Field(
        None, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="Order of this trigger's waiting starts, higher first."
    )

    @model_validator(mode="after")
    def _overlap_alias(self) -> TriggerOptions:
        if self.skip_if_running and self.overlap not in (None, Overlap.SKIP):
            raise ValueError(f"skip_if_running contradicts overlap {self.overlap.value!r}: keep one of them")
        return self

    @property
    def skips_running(self) -> bool:
        """A fire is skipped while a run of the trigger is active (``overlap: skip`` or ``skip_if_running``)."""
        return self.skip_if_running or self.overlap == Overlap.SKIP
    catch_up: CatchUp = CatchUp.SKIP
    misfire_grace_s: DurationS = Field(60.0, ge=0, le=86400, description="A fire this late still runs on time.")
    signature: SignaturePreset | None = Field(None, description="Webhooks: github, stripe or generic.")
    secret: str | None = Field(None, min_length=8, max_length=512, description="Webhooks: the HMAC secret.")
    signature_header: str | None = Field(None, max_length=100, pattern=r"^[A-Za-z0-9-]+$")
    delivery_header: str | None = Field(None, max_length=100, pattern=r"^[A-Za-z0-9-]+$")
    tolerance_s: DurationS | None = Field(
        None, gt=0, le=86400, description="Stripe, or generic with timestamp_header: timestamp tolerance."
    )
    timestamp_header: str | None = Field(
        None, max_length=100, pattern=r"^[A-Za-z0-9-]+$",
        description="Generic webhooks: a header carrying the unix time, signed with the body as '<t>.<body>'.",
    )

    @field_validator("event_filter")
    @classmethod
    def _filter(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            eventfilter.validate(value)
        except eventfilter.FilterError as exc:
            raise ValueError(str(exc)) from None
        return value


class TriggerSpec(BaseModel):
    """What ``POST /v1/workflows/{id}/triggers`` accepts."""

    model_config = ConfigDict(extra="forbid")

    type: TriggerType
    name: str | None = Field(None, max_length=200)
    enabled: bool = True
    cron_expression: str | None = Field(None, max_length=200)
    timezone: str | None = Field(None, max_length=64)
    input_data: Any = None
    config: TriggerOptions = Field(default_factory=TriggerOptions)

    @field_validator("type", mode="before")
    @classmethod
    def _cron_alias(cls, value: Any) -> Any:
        return "schedule" if isinstance(value, str) and value.lower() == "cron" else value

    @model_validator(mode="after")
    def _by_type(self) -> TriggerSpec:
        kind = self.type
        if kind == TriggerType.SCHEDULE:
            if not self.cron_expression:
                raise ValueError("a schedule trigger needs cron_expression (e.g. '0 * * * *' or '@daily')")
        elif self.cron_expression is not None or self.timezone is not None:
            raise ValueError(f"cron_expression and timezone belong to schedule triggers, not {kind.value}")
        if kind == TriggerType.EVENT and not self.config.event_type:
            raise ValueError("an event trigger needs config.event_type")
        if kind != TriggerType.EVENT and (self.config.event_type or self.config.event_filter):
            raise ValueError(f"config.event_type and config.event_filter belong to event triggers, not {kind.value}")
        webhook_only = ("signature", "secret", "signature_header", "delivery_header", "tolerance_s", "timestamp_header")
        if kind != TriggerType.WEBHOOK and any(getattr(self.config, f) is not None for f in webhook_only):
            raise ValueError(f"signature options belong to webhook triggers, not {kind.value}")
        return self

    def checked(self) -> TriggerSpec:
        """Validate what needs more than the model (cron and timezone); fill webhook defaults."""
        if self.type == TriggerType.SCHEDULE:
            spec = cron.parse(self.cron_expression or "")
            tz = cron.zone(self.timezone or "UTC")
            cron.next_fire(spec, datetime.now(UTC), tz)  # "never fires" is an error now, not at run time
            return self.model_copy(update={"timezone": self.timezone or "UTC"})
        if self.type == TriggerType.WEBHOOK:
            options = self.config.model_copy(
                update={
                    "signature": self.config.signature or SignaturePreset.GENERIC,
                    "secret": self.config.secret or secrets.token_urlsafe(32),
                }
            )
            return self.model_copy(update={"config": options})
        return self


class Trigger(BaseModel):
    """A stored trigger: the spec plus its id, template and runtime counters."""

    model_config = ConfigDict(extra="ignore")

    id: str
    workflow_id: str
    spec: TriggerSpec
    created_at: float
    enabled: bool = True
    next_run: float | None = None
    last_run: float | None = None
    run_count: int = 0
    last_workflow_id: str | None = None
    skipped: dict[str, int] = Field(default_factory=dict)

    @property
    def type(self) -> TriggerType:
        return self.spec.type

    def webhook_auth(self) -> WebhookAuth:
        cfg = self.spec.config
        return WebhookAuth(
            preset=cfg.signature or SignaturePreset.GENERIC,
            secret=cfg.secret or "",
            header=cfg.signature_header or DEFAULT_GENERIC_HEADER,
            delivery_header=cfg.delivery_header or DEFAULT_DELIVERY_HEADER,
            tolerance_s=cfg.tolerance_s or 300.0,
            timestamp_header=cfg.timestamp_header,
        )

    def cron(self) -> tuple[cron.CronSpec, Any]:
        return cron.parse(self.spec.cron_expression or ""), cron.zone(self.spec.timezone)


def new_trigger_id() -> str:
    return f"tr-{secrets.token_hex(8)}"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def trigger_view(trigger: Trigger, *, reveal_secret: bool = False) -> dict[str, Any]:
    """The JSON of a trigger. The webhook secret is shown only once, in the creation answer."""
    config = trigger.spec.config.model_dump(mode="json", exclude_none=True)
    if "secret" in config and not reveal_secret:
        config["secret"] = SECRET_MASK
    view: dict[str, Any] = {
        "id": trigger.id,
        "workflow_id": trigger.workflow_id,
        "type": trigger.type.value,
        "name": trigger.spec.name,
        "enabled": trigger.enabled,
        "cron_expression": trigger.spec.cron_expression,
        "timezone": trigger.spec.timezone,
        "input_data": trigger.spec.input_data,
        "config": config,
        "next_run": _iso(trigger.next_run) if trigger.enabled else None,
        "last_run": _iso(trigger.last_run),
        "run_count": trigger.run_count,
        "last_workflow_id": trigger.last_workflow_id,
        "skipped": dict(trigger.skipped),
        "skipped_count": sum(trigger.skipped.values()),
        "created_at": _iso(trigger.created_at),
    }
    if trigger.type == TriggerType.WEBHOOK:
        view["webhook_url"] = f"/v1/hooks/{trigger.id}"
    return view


def merge_input(template_input: Any, input_data: Any, carried: Any) -> Any:
    """The new workflow's input: template input, then ``input_data``, then the fire's payload.

    Objects are merged shallowly, later wins. A part that is not an object is kept under a key of
    its own (``input``, ``input_data``, ``payload``), except a template input alone, kept as it is.
    """
    if input_data is None and carried is None:
        return template_input
    merged: dict[str, Any] = {}
    for key, part in (("input", template_input), ("input_data", input_data), ("payload", carried)):
        if isinstance(part, dict):
            merged.update(part)
        elif part is not None:
            merged[key] = part
    return merged


# ---- schedules ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleDecision:
    fire_at: float | None  # the cron time this fire stands for; None: no fire now
    missed: int  # fires counted as skipped ("missed")
    next_run: float  # the next fire after now


def plan_schedule(trigger: Trigger, due_at: float, now: float, *, cap: int = 1000) -> ScheduleDecision:
    """What a scheduler does with a schedule trigger due at ``due_at`` (``<= now``).

    The latest due time is run if it is at most ``misfire_grace_s`` late; earlier due times (and the
    latest, when it is later than that) were missed while no scheduler ran: ``catch_up=skip`` counts
    them as skipped, ``catch_up=run_once`` runs once for all of them.
    """
    spec, tz = trigger.cron()
    anchor = datetime.fromtimestamp(trigger.created_at, UTC)
    due = datetime.fromtimestamp(due_at, UTC)
    current = datetime.fromtimestamp(now, UTC)
    later = cron.fires_between(spec, due, current, tz, limit=cap, anchor=anchor)
    occurrences = [due_at, *(t.timestamp() for t in later)]
    next_run = cron.next_fire(spec, current, tz, anchor=anchor).timestamp()
    latest = occurrences[-1]
    on_time = now - latest <= trigger.spec.config.misfire_grace_s
    if on_time or trigger.spec.config.catch_up == CatchUp.RUN_ONCE:
        return ScheduleDecision(fire_at=latest, missed=len(occurrences) - 1, next_run=next_run)
    return ScheduleDecision(fire_at=None, missed=len(occurrences), next_run=next_run)


def first_run(trigger: Trigger, now: float) -> float:
    """The first fire after ``now`` (creation or re-enabling resumes from the next future time)."""
    spec, tz = trigger.cron()
    anchor = datetime.fromtimestamp(trigger.created_at, UTC)
    value = cron.next_fire(spec, datetime.fromtimestamp(now, UTC), tz, anchor=anchor).timestamp()
    if not math.isfinite(value):
        raise InvalidInput("the schedule has no next fire", field="cron_expression")
    return value
