"""Every operation the gateway serves, declared for the OpenAPI document (:mod:`gateway.apispec`).

A new route needs an entry here: ``tests/unit/test_openapi_spec.py`` fails for a served method and path
without one. The pool service's routes are declared as their concrete paths (``served_by`` names the
gateway's forwarding route); with the pool service down they answer 503.
"""

from __future__ import annotations

from typing import Any

from flowcore import flowcontrol, metric_series, retention
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.triggers import TriggerSpec
from gateway import apimodels as m
from gateway.apispec import (
    JSON,
    SSE,
    TAR,
    TEXT,
    YAML,
    Body,
    Op,
    Param,
    empty,
    json_of,
    q_bool,
    q_enum,
    q_int,
    q_str,
)
from gateway.routes.approvals import DecisionIn
from gateway.routes.intake import EventIn
from gateway.routes.state import AppendBody, CasBody, IncrementBody, SetBody
from gateway.routes.triggers import MAX_IDEMPOTENCY_KEY, ManualFire

STATUSES = [s.value for s in WorkflowStatus]
STREAM_ID = r"^\d{1,20}(-\d{1,20})?$"
DURATION = r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d|w))+)\s*$"
CURSOR = r"^\d{1,20}(-\d{1,20})?(,\d{1,20}(-\d{1,20})?)?$"
TIME = "an ISO-8601 time with a zone (e.g. 2026-01-01T00:00:00Z) or epoch seconds"
ANY_JSON: dict[str, Any] = {}

PRIORITY = q_int("priority", flowcontrol.MIN_PRIORITY, flowcontrol.MAX_PRIORITY, "Order among waiting starts.")
LIMIT_1000, OFFSET = q_int("limit", 1, 1000), q_int("offset", 0, 10_000_000)
DURATION_Q = q_str("duration", "The window: seconds or units (30m, 1h, 24h, 7d), at most 366d.", pattern=DURATION)
IDEMPOTENCY = Param("Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY,
                                        "pattern": r"^\S+$"}, "A repeated key fires once.", where="header")
LAST_EVENT_ID = Param("Last-Event-ID", {"type": "string", "pattern": CURSOR}, "Resume after this event.",
                      where="header")
WORKFLOW = json_of(m.Workflow, "The workflow.")
LOCATION = {"Location": {"type": "string"}}  # the created resource's path
CREATED = Body(m.Workflow, description="The workflow, created.", headers=LOCATION)
DEFINITION = Body(WorkflowDefinition, (JSON, YAML))
TRIGGER = json_of(m.Trigger, "The trigger.")
FIRED = {201: json_of(m.FireAnswer, "A workflow was started."),
         200: json_of(m.FireAnswer, "Nothing started: a duplicate, or the fire was skipped (`reason`).")}
DELETED = {204: empty("Deleted.")}
POOL = ("pools",)
WF_STATE = "/v1/workflows/{workflow_id}/state/{key}"

WORKFLOWS: tuple[Op, ...] = (
    Op("POST", "/v1/workflows", "Create a workflow from a JSON or YAML definition; `start=true` also starts it.",
       {201: CREATED}, query=(q_bool("start"), PRIORITY), body=DEFINITION, errors=frozenset({404, 409})),
    Op("GET", "/v1/workflows", "Workflows, newest first.", {200: json_of(m.WorkflowPage)},
       query=(q_enum("status", STATUSES), LIMIT_1000, OFFSET)),
    Op("DELETE", "/v1/workflows", "Delete (or with `dry_run` list) the finished workflows a filter selects.",
       {200: json_of(m.DeleteOutcome)},
       query=(
           Param("status", {"type": "array", "items": {"type": "string", "enum": STATUSES}}),
           q_str("name", minLength=1, maxLength=200),
           Param("label", {"type": "array", "maxItems": 20, "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
                 "key=value"),
           q_str("created_before", TIME), q_str("finished_before", TIME),
           q_str("older_than", "A duration (7d, 12h).", pattern=DURATION),
           q_int("limit", 1, retention.MAX_LIMIT), q_bool("dry_run"),
       )),
    Op("GET", "/v1/workflows/{workflow_id}", "A workflow with its steps, tasks, definition and graph.", {200: WORKFLOW}),
    Op("DELETE", "/v1/workflows/{workflow_id}", "Delete a finished or never-started workflow; 409 while it runs.",
       DELETED, errors=frozenset({409})),
    Op("POST", "/v1/workflows/{workflow_id}/start", "Start a created workflow.", {202: WORKFLOW},
       query=(PRIORITY,), errors=frozenset({409})),
    Op("POST", "/v1/workflows/{workflow_id}/cancel", "Cancel a workflow.", {202: WORKFLOW}, errors=frozenset({409})),
    Op("POST", "/v1/workflows/{workflow_id}/retry", "Run a finished workflow again as a new one.",
       {201: Body(m.RetryAnswer, headers=LOCATION)}, errors=frozenset({409})),
    Op("GET", "/v1/workflows/{workflow_id}/jobs", "The containers that ran its tasks.", {200: json_of(m.JobList)}),
    Op("GET", "/v1/workflows/{workflow_id}/spans", "Its trace spans, oldest first.", {200: json_of(m.Spans)}),
    Op("GET", "/v1/workflows/{workflow_id}/metrics", "One workflow's metrics.", {200: json_of(m.WorkflowMetrics)}),
    Op("GET", "/v1/workflows/{workflow_id}/logs",
       "Its output lines, oldest first; with `follow=true` a live `text/plain` stream.",
       {200: Body(m.LogPage, (JSON, TEXT), "A page of lines (JSON), or the followed lines (text).")},
       query=(q_str("step", minLength=1), q_int("index", 0, 10_000_000), q_str("since", pattern=STREAM_ID),
              q_int("limit", 1, 10_000), q_bool("follow"))),
    Op("GET", "/v1/workflows/{workflow_id}/events", "Live progress as server-sent events; ends when it finishes.",
       {200: Body(None, (SSE,), "The event stream.")}, query=(q_str("since", pattern=CURSOR), LAST_EVENT_ID),
       errors=frozenset({429})),
    Op("POST", "/v1/workflows/{workflow_id}/steps/{step_id}/approve", "Approve a waiting approval step.",
       {200: json_of(m.Decision)}, body=json_of(DecisionIn), body_required=False, errors=frozenset({409})),
    Op("POST", "/v1/workflows/{workflow_id}/steps/{step_id}/reject", "Reject a waiting approval step.",
       {200: json_of(m.Decision)}, body=json_of(DecisionIn), body_required=False, errors=frozenset({409})),
)

STATE: tuple[Op, ...] = (
    Op("GET", "/v1/workflows/{workflow_id}/state", "The whole state.", {200: json_of(m.StateAll)}),
    Op("GET", WF_STATE, "One key.", {200: json_of(m.StateValue)}),
    Op("PUT", WF_STATE, "Set a key.", {200: json_of(m.StateValue)}, body=json_of(SetBody)),
    Op("DELETE", WF_STATE, "Delete a key.", DELETED),
    Op("POST", f"{WF_STATE}/increment", "Add to a number.", {200: json_of(m.StateValue)}, body=json_of(IncrementBody)),
    Op("POST", f"{WF_STATE}/append", "Append to a list.", {200: json_of(m.StateValue)}, body=json_of(AppendBody)),
    Op("POST", f"{WF_STATE}/cas", "Compare and set.", {200: json_of(m.CasAnswer)}, body=json_of(CasBody)),
)

TRIGGERS: tuple[Op, ...] = (
    Op("POST", "/v1/workflows/{workflow_id}/triggers", "Create a trigger on a template workflow.",
       {201: Body(m.Trigger, headers=LOCATION)},
       body=Body(TriggerSpec, (JSON, YAML)), errors=frozenset({409})),
    Op("GET", "/v1/workflows/{workflow_id}/triggers", "The triggers of a workflow.", {200: json_of(m.TriggerList)}),
    Op("POST", "/v1/workflows/{workflow_id}/trigger", "A new run of this workflow's definition.", FIRED,
       query=(IDEMPOTENCY,), body=json_of(ManualFire), body_required=False, errors=frozenset({409})),
    Op("GET", "/v1/triggers", "Every trigger, newest first.", {200: json_of(m.TriggerPage)}, query=(LIMIT_1000, OFFSET)),
    Op("GET", "/v1/triggers/{trigger_id}", "A trigger.", {200: TRIGGER}),
    Op("DELETE", "/v1/triggers/{trigger_id}", "Delete a trigger.", DELETED),
    Op("POST", "/v1/triggers/{trigger_id}/enable", "Enable a trigger.", {200: TRIGGER}),
    Op("POST", "/v1/triggers/{trigger_id}/disable", "Disable a trigger.", {200: TRIGGER}),
    Op("POST", "/v1/triggers/{trigger_id}/fire", "Fire a trigger by hand.", FIRED, query=(IDEMPOTENCY,),
       body=json_of(ManualFire), body_required=False, errors=frozenset({409})),
    Op("GET", "/v1/triggers/{trigger_id}/runs", "The workflows it started, newest first.", {200: json_of(m.Items)},
       query=(LIMIT_1000,)),
    Op("POST", "/v1/events", "Publish an event: fires matching triggers, resumes waiting runs.",
       {202: json_of(m.EventAnswer)}, body=json_of(EventIn), errors=frozenset({409})),
    Op("GET", "/v1/events", "Every workflow's events as server-sent events; never ends.",
       {200: Body(None, (SSE,), "The event stream.")}, query=(q_str("since", pattern=CURSOR), LAST_EVENT_ID)),
    Op("POST", "/v1/hooks/{trigger_id}", "A webhook delivery, signed per the trigger's preset (no bearer token).",
       {202: json_of(m.WebhookAnswer)}, body=Body(ANY_JSON, (JSON, "application/x-www-form-urlencoded", TEXT)),
       body_required=False, errors=frozenset({401, 409}), public=True),
)

OBSERVE: tuple[Op, ...] = (
    Op("GET", "/healthz", "Liveness and Redis reachability.", {200: json_of(m.Health)}, public=True),
    Op("GET", "/v1/openapi.json", "This document.", {200: json_of({"type": "object"})}, public=True),
    Op("GET", "/v1/metrics/history", "Workflows created in the window, newest first.", {200: json_of(m.History)},
       query=(DURATION_Q, LIMIT_1000, q_enum("status", STATUSES))),
    Op("GET", "/v1/metrics/series", "The window in equal buckets.", {200: json_of(m.Series)},
       query=(DURATION_Q, q_int("buckets", 1, metric_series.MAX_BUCKETS))),
    Op("GET", "/v1/metrics/aggregate", "Totals, success rate, durations, pool efficiency.",
       {200: json_of(m.Aggregate)}, query=(DURATION_Q,)),
    Op("GET", "/v1/metrics/flow-control", "Flow-controlled starts by outcome.", {200: json_of(m.FlowControlCounts)}),
    Op("GET", "/metrics", "Prometheus text format 0.0.4, or OpenMetrics 1.0 when `Accept` asks for it (ADR 020).",
       {200: Body(None, (TEXT, "application/openmetrics-text"), "The exposition.")}),
)

SECRETS: tuple[Op, ...] = (
    Op("GET", "/v1/secrets", "Secret names and times (never a value).", {200: json_of(m.SecretList)}),
    Op("GET", "/v1/secrets/{name}", "One secret's name and times.", {200: json_of(m.Secret)}),
    Op("PUT", "/v1/secrets/{name}", "Store or replace a secret.", {200: json_of(m.Secret)},
       body=json_of({"type": "object", "required": ["value"], "additionalProperties": False,
                     "properties": {"value": {"type": "string", "minLength": 4, "maxLength": 65536},
                                    "workflows": {"type": "array", "minItems": 1, "maxItems": 100,
                                                  "items": {"type": "string"},
                                                  "description": "Workflows or templates that may use it "
                                                                 "(left out: every workflow)."}}})),
    Op("DELETE", "/v1/secrets/{name}", "Delete a secret.", DELETED),
)

_POOL_ERRS = frozenset({502})  # the pool's own answers pass through: 404, 409, 422 and 502 among them
_WF_Q = q_str("workflow_id", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_TAIL = q_int("tail", 1, 100_000, "The last N lines.")


def _pool(method: str, path: str, summary: str, answers: dict[int, Body], *, served_by: str | None = None,
          **kw: Any) -> Op:
    errs = frozenset(kw.pop("errors", frozenset())) | _POOL_ERRS | {404, 409}
    return Op(method, path, f"{summary} (forwarded to the pool service).", answers, served_by=served_by,
              errors=errs, tags=POOL, **kw)


POOLS_R, AGENTS_R, KEPT_R = "/v1/pools/{rest:path}", "/v1/agents/{rest:path}", "/v1/kept/{rest:path}"
FORWARDED: tuple[Op, ...] = (
    _pool("GET", "/v1/pools", "Warm pools and their counters", {200: json_of(m.PoolAnswer)}),
    _pool("GET", "/v1/pools/{key}", "One warm pool", {200: json_of(m.PoolAnswer)}, served_by=POOLS_R),
    _pool("POST", "/v1/pools/{key}/resize", "Resize a warm pool", {200: json_of(m.PoolAnswer)}, served_by=POOLS_R,
          body=json_of(m.Resize)),
    _pool("POST", "/v1/pools/{key}/drain", "Remove a pool's idle containers", {200: json_of(m.PoolAnswer)},
          served_by=POOLS_R),
    _pool("GET", "/v1/agents", "Long-running agent containers", {200: json_of(m.AgentList)}, query=(_WF_Q,)),
    _pool("POST", "/v1/agents", "Deploy an agent container", {201: json_of(m.PoolAnswer)}, body=json_of(m.AgentSpec)),
    _pool("GET", "/v1/agents/{agent_id}", "An agent", {200: json_of(m.PoolAnswer)}, served_by=AGENTS_R),
    _pool("DELETE", "/v1/agents/{agent_id}", "Remove an agent", DELETED, served_by=AGENTS_R),
    _pool("POST", "/v1/agents/{agent_id}/start", "Start an agent", {200: json_of(m.PoolAnswer)}, served_by=AGENTS_R),
    _pool("POST", "/v1/agents/{agent_id}/stop", "Stop an agent", {200: json_of(m.PoolAnswer)}, served_by=AGENTS_R),
    _pool("GET", "/v1/agents/{agent_id}/logs", "An agent's output (`follow=true`: a live stream)",
          {200: Body(None, (TEXT,), "Its output.")}, served_by=AGENTS_R, query=(_TAIL, q_bool("follow"))),
    _pool("GET", "/v1/kept", "Task containers kept by a cleanup policy", {200: json_of(m.KeptList)}, query=(_WF_Q,)),
    _pool("DELETE", "/v1/kept", "Remove a workflow's kept containers", {200: json_of(m.KeptRemoved)},
          query=(Param("workflow_id", _WF_Q.schema, required=True),)),
    _pool("GET", "/v1/kept/{container_id}", "A kept container", {200: json_of(m.PoolAnswer)}, served_by=KEPT_R),
    _pool("DELETE", "/v1/kept/{container_id}", "Remove a kept container", DELETED, served_by=KEPT_R),
    _pool("GET", "/v1/kept/{container_id}/logs", "A kept container's output", {200: Body(None, (TEXT,), "Output.")},
          served_by=KEPT_R, query=(_TAIL,)),
    _pool("GET", "/v1/kept/{container_id}/files", "Files of a kept container as a tar",
          {200: Body(None, (TAR,), "A tar archive.")}, served_by=KEPT_R, query=(q_str("path", maxLength=4096),),
          errors=frozenset({413})),
)

OPERATIONS: tuple[Op, ...] = (*OBSERVE, *WORKFLOWS, *STATE, *TRIGGERS, *SECRETS, *FORWARDED)
