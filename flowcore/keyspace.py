"""Every Redis key Agentainer Flow writes, built in one place.

All keys start with the configured prefix (default ``flow``) so several stacks can share one Redis.

Workflows
    ``{p}:wf:{id}``             hash   record fields: ``definition`` (JSON), ``status``, ``created_at``,
                                       ``started_at``, ``finished_at``, ``error``, ``origin`` (JSON),
                                       ``version`` (bumped by every engine commit), ``trace`` (the
                                       W3C traceparent of the workflow's root span, when traced),
                                       ``definition_digest`` (what the per-process definition cache keys on)
    ``{p}:wf:{id}:steps``       hash   step id -> StepRecord JSON
    ``{p}:wf:{id}:tasks``       hash   ``{step}:{index}`` -> TaskRecord JSON (one per container task)
    ``{p}:wf:{id}:state``       hash   user state key -> JSON value
    ``{p}:wf:{id}:items``       hash   ``{step}:{index}`` -> JSON of one map item, written once when the map
                                       step begins (a claim reads its own item, not the whole list)
    ``{p}:wf:{id}:events``      stream progress events (status changes, step events), capped
    ``{p}:wf:{id}:logs``        stream log lines of the workflow's tasks (fields of ``flowcore.logstream.LogLine``:
                                       step_id, index, attempt, stream, line, ts), capped at ~10,000
    ``{p}:wf:{id}:spans``       list   finished trace spans (JSON) of the workflow, last N, expiring after
                                       the span retention (:mod:`flowcore.tracing_store`)
    ``{p}:wfs``                 zset   every workflow id, score = created_at (ms)
    ``{p}:wfs:status:{status}`` zset   workflow ids by status, score = created_at (ms)

Execution
    ``{p}:leases``              zset   ``{wf}|{step}|{index}|{token}`` -> lease expiry (ms); a lapsed lease
                                       means the worker died and the task is taken over
    ``{p}:queued``              zset   the same members, of tasks committed as queued and not yet claimed ->
                                       when they became runnable (ms); one that stays unclaimed although
                                       its job left the queue (the worker died before claiming) is
                                       re-dispatched by the reaper (:mod:`workers.reaper`)
    ``{p}:containers:{wf}``     hash   container id -> JSON of the containers that served the workflow
    ``{p}:wake``                list   wake-up tokens: every commit that enqueues jobs pushes some (capped);
                                       idle workers block on it (BLPOP) instead of polling the queue
    ``{p}:events``              stream events of all workflows (for the global live view), capped

Triggers
    ``{p}:trigger:{tid}``       hash   ``spec`` (JSON), ``enabled``, ``next_run``, ``last_run``, ``run_count``,
                                       ``last_workflow_id``, ``skipped:{reason}`` counters
    ``{p}:triggers``            zset   every trigger id, score = created_at (ms)
    ``{p}:wf:{id}:triggers``    set    ids of the triggers whose template is this workflow
    ``{p}:triggers:due``        zset   enabled schedule trigger id -> next fire (ms); what schedulers poll
    ``{p}:triggers:event:{type}`` set  ids of the event triggers of one event type
    ``{p}:trigger:{tid}:runs``  zset   workflow ids this trigger started -> created (ms), last 1000
    ``{p}:fire:{tid}:{key}``    string what one fire did (the new workflow id, or ``skip:{reason}``);
                                       keyed by cron time, event id or delivery id; expires after the
                                       idempotency retention
    ``{p}:event:{id}``          string a received event (type, matched trigger ids); expires likewise

Pools and agents
    ``{p}:pools:services``      hash   pool service id -> registration JSON (url, capacity, warm keys)
    ``{p}:pools:heartbeat``     zset   pool service id -> last heartbeat (ms)
    ``{p}:agents``              hash   agent id -> agent record JSON

Dashboard
    ``{p}:ui:session:{digest}`` hash   a browser session: ``csrf`` token, ``created_at``; the key holds the
                                       SHA-256 of the cookie's session id (never the id itself) and
                                       expires with the session

The arq queue uses arq's own keys (``arq:job:*``, ``arq:in-progress:*``, ``arq:retry:*``), with the
queue name ``{p}:queue``. A task's job id is ``task:{wf}:{step}:{index}:{token}``
(:func:`flowcore.store.task_job_id`); its in-progress marker lives as long as the task's lease
(workers renew both), so a dead worker's marker is gone within seconds, not days.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyspace:
    prefix: str = "flow"

    # workflows
    def workflow(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}"

    def steps(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:steps"

    def tasks(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:tasks"

    def state(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:state"

    def items(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:items"

    def events(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:events"

    def logs(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:logs"

    def spans(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:spans"

    def containers(self, wf_id: str) -> str:
        return f"{self.prefix}:containers:{wf_id}"

    def workflow_keys(self, wf_id: str) -> list[str]:
        """Every key that belongs to one workflow (for delete)."""
        return [
            self.workflow(wf_id),
            self.steps(wf_id),
            self.tasks(wf_id),
            self.state(wf_id),
            self.items(wf_id),
            self.events(wf_id),
            self.logs(wf_id),
            self.spans(wf_id),
            self.containers(wf_id),
        ]

    @property
    def all_workflows(self) -> str:
        return f"{self.prefix}:wfs"

    def by_status(self, status: str) -> str:
        return f"{self.prefix}:wfs:status:{status}"

    # execution
    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    @property
    def queued(self) -> str:
        return f"{self.prefix}:queued"

    @property
    def wake(self) -> str:
        return f"{self.prefix}:wake"

    @property
    def global_events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def queue(self) -> str:
        return f"{self.prefix}:queue"

    # triggers
    def trigger(self, trigger_id: str) -> str:
        return f"{self.prefix}:trigger:{trigger_id}"

    @property
    def all_triggers(self) -> str:
        return f"{self.prefix}:triggers"

    def workflow_triggers(self, wf_id: str) -> str:
        return f"{self.prefix}:wf:{wf_id}:triggers"

    @property
    def triggers_due(self) -> str:
        return f"{self.prefix}:triggers:due"

    def event_triggers(self, event_type: str) -> str:
        return f"{self.prefix}:triggers:event:{event_type}"

    def trigger_runs(self, trigger_id: str) -> str:
        return f"{self.prefix}:trigger:{trigger_id}:runs"

    def fire(self, trigger_id: str, fire_key: str) -> str:
        return f"{self.prefix}:fire:{trigger_id}:{fire_key}"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}"

    # pools and agents
    @property
    def pool_services(self) -> str:
        return f"{self.prefix}:pools:services"

    @property
    def pool_heartbeats(self) -> str:
        return f"{self.prefix}:pools:heartbeat"

    @property
    def agents(self) -> str:
        return f"{self.prefix}:agents"

    # dashboard
    def ui_session(self, digest: str) -> str:
        return f"{self.prefix}:ui:session:{digest}"


def lease_member(wf_id: str, step_id: str, index: int, token: str) -> str:
    return f"{wf_id}|{step_id}|{index}|{token}"


def parse_lease_member(member: str) -> tuple[str, str, int, str]:
    wf_id, step_id, index, token = member.split("|")
    return wf_id, step_id, int(index), token


def task_field(step_id: str, index: int) -> str:
    return f"{step_id}:{index}"
