"""``/v1/workflows``: create, list, get, start, cancel, delete, jobs."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore import dag, engine, flowcontrol, limits, secretrefs, waitstore
from flowcore.admission_store import FlowControl
from flowcore.debounce_store import Debouncer
from flowcore.engine import EngineEnv, Plan
from flowcore.errors import InvalidInput, NotFound
from flowcore.models import WorkflowDefinition, WorkflowStatus
from flowcore.policy import check_definition
from flowcore.records import Origin, Snapshot
from flowcore.secretstore import SecretStore
from flowcore.settings import TaskPolicySection
from flowcore.store import WorkflowStore, new_workflow_id
from flowcore.tracing import WorkflowRoot
from gateway.bodies import parse_model, query_bool, query_int, read_document
from gateway.routes import pools
from gateway.views import workflow_view


def store_of(request: Request) -> WorkflowStore:
    store: WorkflowStore = request.app.state.store
    return store


def policy_of(request: Request) -> TaskPolicySection:
    """What steps may ask for on this gateway (the operator's settings)."""
    policy: TaskPolicySection = request.app.state.settings.policy
    return policy


def query_priority(request: Request) -> int | None:
    """``?priority=N``: the order of this start among waiting starts (flow control, ADR 013)."""
    if "priority" not in request.query_params:
        return None
    return query_int(request, "priority", 0, lo=flowcontrol.MIN_PRIORITY, hi=flowcontrol.MAX_PRIORITY)


def parse_definition(document: Any, policy: TaskPolicySection) -> WorkflowDefinition:
    """Validate a submitted definition: each object (pydantic), the graph (ids, cycles, targets), then
    what its steps ask for against the operator's policy (networks, user, limits, pool scope)."""
    definition = parse_model(document, WorkflowDefinition)
    max_steps = limits.current().max_steps  # FLOW_LIMITS__MAX_STEPS
    if len(definition.steps) > max_steps:
        raise InvalidInput(f"a workflow has at most {max_steps} steps, this one {len(definition.steps)}"
                           " (FLOW_LIMITS__MAX_STEPS; a map step runs many tasks as one step)", field="steps")
    dag.validate(definition)
    check_definition(definition, policy)
    return definition


async def submit(
    store: WorkflowStore,
    definition: WorkflowDefinition,
    *,
    start: bool,
    origin: Origin | None = None,
    priority: int | None = None,
) -> Snapshot:
    """Create (and start) a workflow; returns it as committed. Its trace starts here (flowcore.tracing).

    A start under flow control (ADR 013) goes through admission: it may be queued or refused."""
    if start:
        dag.check_runnable(definition)
    kind = origin.kind if origin is not None else "api"
    root = WorkflowRoot(definition.name, origin_kind=kind, trigger_id=origin.trigger_id if origin else None)
    run = flowcontrol.run_slots(definition.name, definition.config, definition.input, priority=priority)
    if start and run is not None and definition.config.debounce is not None:
        wf_id, opened = await Debouncer(store).submit(definition, origin or Origin(), run, trace=root.traceparent)
        if opened:
            root.end(wf_id)
        return await store.load(wf_id)
    if start and run is not None:
        wf_id = new_workflow_id()
        control = FlowControl(store)
        try:
            await control.create_queued(wf_id, definition, origin or Origin(), run, trace=root.traceparent)
            await control.admit(wf_id)
            return await store.load(wf_id)
        finally:
            root.end(wf_id)
    wf_id = await store.create(definition, origin=origin, trace=root.traceparent)
    try:
        if start:
            return (await store.transact(wf_id, lambda snap: engine.start(snap, EngineEnv()))).snap
        return await store.load(wf_id)
    finally:
        root.end(wf_id)


async def create_workflow(request: Request) -> Response:
    """Create a workflow from a JSON or YAML definition; ``?start=true`` also starts it."""
    definition = parse_definition(await read_document(request), policy_of(request))
    await waitstore.check_templates(store_of(request), definition, policy_of(request))  # workflow steps (ADR 012)
    start = query_bool(request, "start")
    priority = query_priority(request)
    if start:  # a new run is no listed workflow: a secret limited to some refuses it now, not in its task
        secrets: SecretStore = request.app.state.secrets
        await secrets.check_usable(secretrefs.step_references(definition.steps), (None,))
    snap = await submit(store_of(request), definition, start=start, priority=priority)
    return JSONResponse(workflow_view(snap), status_code=201, headers={"location": f"/v1/workflows/{snap.wf_id}"})


async def list_workflows(request: Request) -> Response:
    """Workflows newest first, optionally filtered by ``status``; paginated by ``limit``/``offset``."""
    raw_status = request.query_params.get("status")
    status = None
    if raw_status:
        try:
            status = WorkflowStatus(raw_status.lower())
        except ValueError:
            allowed = ", ".join(s.value for s in WorkflowStatus)
            raise InvalidInput(f"unknown status {raw_status!r}; use one of {allowed}", field="status") from None
    limit = query_int(request, "limit", 50, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0, hi=10_000_000)
    store = store_of(request)
    ids, total = await store.list_ids(status, offset, limit)
    items = []
    now = time.time()
    for wf_id in ids:
        try:
            snap = await store.load_summary(wf_id)
        except NotFound:  # deleted between the index read and the load
            continue
        items.append(workflow_view(snap, detail=False, now=now))
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


async def get_workflow(request: Request) -> Response:
    snap = await store_of(request).load(request.path_params["workflow_id"])
    return JSONResponse(workflow_view(snap, now=time.time()))


async def start_workflow(request: Request) -> Response:
    """Start a pending workflow; 409 when it has already started. Under flow control it is admitted,
    queued or refused (ADR 013)."""
    store = store_of(request)
    wf_id = request.path_params["workflow_id"]
    priority = query_priority(request)
    summary = await store.load_summary(wf_id)
    defn = summary.definition
    run = flowcontrol.run_slots(defn.name, defn.config, defn.input, priority=priority)
    if run is not None and summary.status == WorkflowStatus.PENDING:
        dag.check_runnable(defn)
        control = FlowControl(store)
        await control.enqueue_pending(wf_id, run)
        await control.admit(wf_id)
        return JSONResponse(workflow_view(await store.load(wf_id), now=time.time()), status_code=202)

    def start(snap: Snapshot) -> Plan:
        dag.check_runnable(snap.definition)
        return engine.start(snap, EngineEnv())

    plan = await store.transact(wf_id, start)
    return JSONResponse(workflow_view(plan.snap), status_code=202)


async def cancel_workflow(request: Request) -> Response:
    """Cancel a workflow: running tasks are killed, pending steps never start; 409 when finished."""
    store = store_of(request)
    wf_id = request.path_params["workflow_id"]
    plan = await store.transact(wf_id, lambda snap: engine.cancel(snap, EngineEnv()))
    return JSONResponse(workflow_view(plan.snap), status_code=202)


async def delete_workflow(request: Request) -> Response:
    """Delete a finished (or never started) workflow with its state and triggers; 409 while it runs."""
    wf_id = request.path_params["workflow_id"]
    await store_of(request).delete(wf_id)
    # A template's triggers go with it: nothing may fire from a definition that is gone.
    await request.app.state.triggers.delete_for_workflow(wf_id)
    request.app.state.firing.forget(wf_id)
    await pools.forget_kept(request, wf_id)  # its kept containers (ADR 014)
    return Response(status_code=204)


async def workflow_jobs(request: Request) -> Response:
    """The containers that ran this workflow's tasks, pooled or not."""
    store = store_of(request)
    wf_id = request.path_params["workflow_id"]
    snap = await store.load(wf_id)
    raw = await store.redis.hgetall(store.keys.containers(wf_id))
    recorded = {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
    jobs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cid, info in recorded.items():
        jobs.append({"id": cid, "container_id": cid, **info})
        seen.add(cid)
    for task in sorted(snap.tasks.values(), key=lambda t: (t.step_id, t.index)):
        if task.container_id and task.container_id not in seen:
            seen.add(task.container_id)
            jobs.append(
                {
                    "id": task.container_id,
                    "container_id": task.container_id,
                    "step_id": task.step_id,
                    "index": task.index,
                    "pooled": task.pooled,
                    "mode": task.mode,
                    "status": task.status.value,
                }
            )
    for job in jobs:
        job.setdefault("name", f"{wf_id}/{job.get('step_id', '?')}[{job.get('index', 0)}]")
    return JSONResponse({"items": jobs, "total": len(jobs)})


routes = [
    Route("/v1/workflows", create_workflow, methods=["POST"]),
    Route("/v1/workflows", list_workflows, methods=["GET"]),
    Route("/v1/workflows/{workflow_id}", get_workflow, methods=["GET"]),
    Route("/v1/workflows/{workflow_id}", delete_workflow, methods=["DELETE"]),
    Route("/v1/workflows/{workflow_id}/start", start_workflow, methods=["POST"]),
    Route("/v1/workflows/{workflow_id}/cancel", cancel_workflow, methods=["POST"]),
    Route("/v1/workflows/{workflow_id}/jobs", workflow_jobs, methods=["GET"]),
]
