"""Flow control of workflow starts: what users declare, and the pure admission decisions (ADR 013).

A workflow's ``config`` may carry a ``concurrency`` key (a path into the start's view, e.g.
``input.customer_id``, with a ``limit`` per key value and a ``strategy`` for a full key), a global
``max_concurrent_runs`` per definition name, a ``rate_limit`` (at most ``limit`` starts per
``period_s`` per key) and a ``priority``. A trigger may carry an ``overlap`` policy. Each of these
becomes a :class:`Slot` of the run; a run starts only when every slot of it has room
(:func:`decide`). Everything here is pure: the clock and the slots' current contents come in as
arguments. :mod:`flowcore.admission_store` reads them from Redis and commits the decision atomically.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowcore.durations import DurationS

MAX_LIMIT = 10_000
MIN_PRIORITY, MAX_PRIORITY = -100, 100
SEQ_SPAN = 2**40  # FIFO sequence numbers per priority band (a float score keeps 53 bits exact)
MAX_KEY_CHARS = 200  # longer key values are replaced by their digest in slot ids


DebounceInputs = Literal["last", "all"]


class Strategy(str, enum.Enum):
    QUEUE = "queue"  # wait, FIFO per key (priority first)
    CANCEL_IN_PROGRESS = "cancel_in_progress"  # newest wins: the oldest running run is cancelled
    CANCEL_NEWEST = "cancel_newest"  # oldest wins: the new start is refused (recorded as cancelled)


class Overlap(str, enum.Enum):
    """What a trigger does with a fire while a run it started is still active."""

    SKIP = "skip"  # count the fire as skipped (today's skip_if_running)
    BUFFER_ONE = "buffer_one"  # keep at most one waiting fire; skip the rest
    BUFFER_ALL = "buffer_all"  # every fire waits its turn
    CANCEL_OTHER = "cancel_other"  # cancel the active run, start the new one
    ALLOW_ALL = "allow_all"  # no limit


def _key_path(value: str) -> str:
    from flowcore.models import check_path  # models imports this module

    check_path(value)
    if not value.startswith("input"):
        raise ValueError(f"invalid key path {value!r}: a start key is read from the input (input.<field>)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConcurrencyConfig(_Strict):
    key: str | None = Field(None, max_length=200, description="Path of the key, e.g. 'input.customer_id'; none: one key.")
    limit: int = Field(1, ge=1, le=MAX_LIMIT, description="Runs of one key value active at once.")
    strategy: Strategy = Strategy.QUEUE

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else _key_path(value)


class RateLimitConfig(_Strict):
    key: str | None = Field(None, max_length=200, description="Path of the key; none: one window for all starts.")
    limit: int = Field(ge=1, le=MAX_LIMIT, description="Starts allowed per period.")
    period_s: DurationS = Field(alias="period", gt=0, le=7 * 86400)
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else _key_path(value)


class DebounceConfig(_Strict):
    """Start once per key after ``period`` without a new start (at the latest ``max_wait`` after the
    first), with the ``last`` input or ``all`` of them (a list, in arrival order)."""

    key: str | None = Field(None, max_length=200, description="Path of the key; none: one window for all starts.")
    period_s: DurationS = Field(alias="period", gt=0, le=86400, description="The quiet period.")
    max_wait_s: DurationS | None = Field(None, alias="max_wait", gt=0, le=7 * 86400)
    inputs: DebounceInputs = Field("last", description="last: the last start's input; all: the list of them all.")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else _key_path(value)

    @model_validator(mode="after")
    def _wait(self) -> DebounceConfig:
        if self.max_wait_s is not None and self.max_wait_s < self.period_s:
            raise ValueError("debounce.max_wait must be at least debounce.period")
        return self


def debounce_due(cfg: DebounceConfig, first_at: float, now: float) -> float:
    """When a debounce window whose first start came at ``first_at`` closes, given a start at ``now``:
    a quiet ``period`` after the last start, but never later than ``max_wait`` after the first."""
    due = now + cfg.period_s
    if cfg.max_wait_s is not None:
        due = min(due, first_at + cfg.max_wait_s)
    return due


def debounced_input(cfg: DebounceConfig, inputs: list[Any]) -> Any:
    """The input the debounced run starts with: the last one, or all of them in arrival order."""
    if cfg.inputs == "all":
        return list(inputs)
    return inputs[-1] if inputs else None


def debounce_slot(name: str, cfg: DebounceConfig, workflow_input: Any) -> str:
    return f"d|{name}|{key_value(cfg.key, {'input': workflow_input})}"


class SlotKind(str, enum.Enum):
    CONCURRENCY = "c"
    RATE = "r"


@dataclass(frozen=True)
class Slot:
    """One limit a run must fit in: a concurrency slot (``limit`` active runs) or a rate window."""

    id: str
    kind: SlotKind
    limit: int
    strategy: Strategy = Strategy.QUEUE
    period_s: float = 0.0
    max_queued: int | None = None  # buffer_one: one waiting run at most
    label: str = ""  # what a reason names ("concurrency key 'acme'")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind.value, "limit": self.limit, "strategy": self.strategy.value,
            "period_s": self.period_s, "max_queued": self.max_queued, "label": self.label,
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Slot:
        return Slot(
            id=doc["id"], kind=SlotKind(doc["kind"]), limit=int(doc["limit"]), strategy=Strategy(doc["strategy"]),
            period_s=float(doc["period_s"]), max_queued=doc.get("max_queued"), label=doc.get("label", ""),
        )


@dataclass(frozen=True)
class RunSlots:
    """What admission needs to know about one run: its slots and its priority."""

    slots: tuple[Slot, ...]
    priority: int = 0

    def dumps(self) -> str:
        return json.dumps({"slots": [s.to_json() for s in self.slots], "priority": self.priority})

    @staticmethod
    def loads(raw: str) -> RunSlots:
        doc = json.loads(raw)
        return RunSlots(tuple(Slot.from_json(s) for s in doc["slots"]), int(doc.get("priority", 0)))


def key_value(path: str | None, view: dict[str, Any]) -> str:
    """The key a path picks from ``{"input": ...}``: a string as is, anything else as JSON; a missing
    path gives the empty key (all such starts share one key)."""
    if path is None:
        return "*"
    from flowcore import paths

    try:
        value = paths.resolve(view, path)
    except paths.PathMissing:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_KEY_CHARS:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]
    return text


def run_slots(
    name: str,
    config: Any,
    workflow_input: Any,
    *,
    priority: int | None = None,
    trigger_id: str | None = None,
    overlap: Overlap | None = None,
) -> RunSlots | None:
    """The slots of a run of definition ``name`` with ``config`` (a WorkflowConfig); None: no flow control."""
    view = {"input": workflow_input}
    slots: list[Slot] = []
    if trigger_id is not None and overlap is not None and overlap not in (Overlap.ALLOW_ALL, Overlap.SKIP):
        strategy = Strategy.CANCEL_IN_PROGRESS if overlap == Overlap.CANCEL_OTHER else Strategy.QUEUE
        max_queued = 1 if overlap == Overlap.BUFFER_ONE else None
        slots.append(Slot(f"t|{trigger_id}", SlotKind.CONCURRENCY, 1, strategy, max_queued=max_queued,
                          label=f"trigger {trigger_id} ({overlap.value})"))
    cc: ConcurrencyConfig | None = getattr(config, "concurrency", None)
    if cc is not None:
        key = key_value(cc.key, view)
        slots.append(Slot(f"c|{name}|{key}", SlotKind.CONCURRENCY, cc.limit, cc.strategy,
                          label=f"concurrency key {key!r}"))
    rl: RateLimitConfig | None = getattr(config, "rate_limit", None)
    if rl is not None:
        key = key_value(rl.key, view)
        slots.append(Slot(f"r|{name}|{key}", SlotKind.RATE, rl.limit, period_s=rl.period_s,
                          label=f"rate limit {rl.limit} per {rl.period_s:g}s (key {key!r})"))
    total: int | None = getattr(config, "max_concurrent_runs", None)
    if total is not None:
        slots.append(Slot(f"g|{name}", SlotKind.CONCURRENCY, total, label=f"max_concurrent_runs of {name!r}"))
    if not slots and getattr(config, "debounce", None) is None:
        return None
    chosen = priority if priority is not None else int(getattr(config, "priority", 0) or 0)
    return RunSlots(tuple(slots), chosen)


def queue_score(priority: int, seq: int) -> float:
    """Order of waiting runs in a slot's queue: higher priority first, then first come first served."""
    band = MAX_PRIORITY - max(MIN_PRIORITY, min(MAX_PRIORITY, priority))
    return float(band * SEQ_SPAN + seq % SEQ_SPAN)


# ---- the decision ------------------------------------------------------------------------------
@dataclass
class SlotState:
    """What one slot holds now: active runs (oldest first, with when they were admitted) for a
    concurrency slot; admission times inside the window for a rate slot; how many runs wait."""

    active: list[tuple[str, float]] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    queued: int = 0


class Outcome(str, enum.Enum):
    ADMIT = "admit"
    QUEUE = "queue"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    slot: Slot | None = None  # the slot that blocks (queue) or refuses
    reason: str = ""
    estimated_start: float | None = None  # rate limits: when the window has room again
    evict: tuple[tuple[str, str], ...] = ()  # (run id, slot id) to cancel: newest wins
    counter: str = ""  # queued | throttled | refused | skipped
    behind: bool = False  # queued only behind waiting runs: the slot itself may have room


def in_window(slot: Slot, times: list[float], now: float) -> list[float]:
    """The admissions of a rate slot that still count at ``now`` (within the last ``period_s``)."""
    return sorted(t for t in times if t > now - slot.period_s)


def decide(run: RunSlots, states: dict[str, SlotState], now: float, *, fresh: bool) -> Decision:
    """Admit ``run`` when every slot has room; else queue it on the first full slot, or refuse it, or
    (``cancel_in_progress``) admit it and evict the oldest active run of the full slot.

    ``fresh``: this is the run's first admission. Strategies other than ``queue`` apply then only; a
    run that already waited (for another slot) waits on every slot.
    """
    evict: list[tuple[str, str]] = []
    for slot in run.slots:
        state = states.get(slot.id, SlotState())
        if fresh and state.queued and slot.strategy == Strategy.QUEUE and slot.max_queued is None:
            held = len(in_window(slot, state.window, now)) if slot.kind == SlotKind.RATE else len(state.active)
            return Decision(Outcome.QUEUE, slot, f"queued: behind {state.queued} waiting run(s) of {slot.label}",
                            counter="throttled" if slot.kind == SlotKind.RATE else "queued", behind=held < slot.limit)
        if slot.kind == SlotKind.RATE:
            window = in_window(slot, state.window, now)
            if len(window) >= slot.limit:
                eta = window[len(window) - slot.limit] + slot.period_s
                return Decision(Outcome.QUEUE, slot, f"throttled: {slot.label}", eta, counter="throttled")
            continue
        if len(state.active) < slot.limit:
            continue
        if fresh and slot.strategy == Strategy.CANCEL_IN_PROGRESS and state.active:
            excess = len(state.active) - slot.limit + 1
            evict.extend((run_id, slot.id) for run_id, _ in state.active[:excess])
            continue
        if fresh and slot.strategy == Strategy.CANCEL_NEWEST:
            return Decision(Outcome.REFUSE, slot, f"cancelled: {slot.label} is at its limit of {slot.limit} "
                            "(cancel_newest: the runs in progress win)", counter="refused")
        if fresh and slot.max_queued is not None and state.queued >= slot.max_queued:
            return Decision(Outcome.REFUSE, slot, f"skipped: {slot.label} already has a run waiting",
                            counter="skipped")
        return Decision(Outcome.QUEUE, slot, f"queued: {slot.label} is at its limit of {slot.limit}",
                        counter="queued")
    return Decision(Outcome.ADMIT, evict=tuple(evict))


def eviction_reason(new_run: str, slot: Slot) -> str:
    return f"cancelled: superseded by {new_run} ({slot.label}, cancel_in_progress)"
