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
    ``{p}:replication:barrier`` string a counter the gateway increments before ``WAIT``, so that the WAIT of
                                       its own connection covers every write the master had by then (ADR 021)

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
    ``{p}:event:{src}-{id}``    string a received event (type, matched trigger ids), its id scoped to the
                                       sender (a digest of the token's name); expires likewise

Durable waits (ADR 012)
    ``{p}:waiting:{type}``      hash   ``{wf}|{step}|{token}`` -> JSON ``{"filter", "since"}`` of each
                                       wait_for_event step waiting for events of one type
    ``{p}:waitpaths:{type}``    hash   payload path -> waiters of the type filed under it (flowcore.waitindex)
    ``{p}:waitix:{digest}``     set    waiters of one type whose filter pins that path to one value
    ``{p}:waitscan:{type}``     set    waiters of the type that no index covers (every publish reads them)
    ``{p}:evlog:{type}``        stream the last 1,000 events of one type (``data``: id, payload, ts), read by a
                                       wait that begins after its event was published
    ``{p}:evtypes:watched``     zset   event type -> until when (ms) a workflow may wait for it (set at the
                                       creation of a workflow with such a wait, refreshed when a wait
                                       begins); only these types are logged

Flow control of starts (ADR 013, :mod:`flowcore.admission_store`)
    ``{p}:fc:run:{wf}``         string JSON of a flow-controlled run's slots and priority (until it finishes)
    ``{p}:fc:active:{slot}``    zset   runs holding a concurrency slot -> admitted (ms)
    ``{p}:fc:window:{slot}``    zset   runs admitted through a rate slot -> admitted (ms), trimmed to the period
    ``{p}:fc:q:{slot}``         zset   runs waiting on a slot -> priority band * 2^40 + arrival sequence
    ``{p}:fc:slots``            zset   slot ids with waiting or active runs -> last change (ms): what the sweep visits
    ``{p}:fc:pending``          zset   queued runs not yet through admission -> created (ms)
    ``{p}:fc:admitted``         zset   runs admitted and not yet started -> admitted (ms)
    ``{p}:fc:evict``            hash   run id -> reason, of runs to cancel (newest wins) not yet cancelled
    ``{p}:fc:seq``              string arrival sequence of waiting runs
    ``{p}:fc:deb:{slot}``       hash   the open debounce window of a key: ``wf`` (its run), ``first_at``
    ``{p}:fc:debin:{wf}``       list   the inputs accumulated by a debounce window's run (JSON), until it starts
    ``{p}:fc:debounce``         zset   runs of open debounce windows -> when the window closes (ms)
    ``{p}:fc:debclosed``        zset   runs whose window closed and whose input is not yet written -> closed (ms)
    ``{p}:fc:debwake``          list   wake-up tokens for the workers' debounce timers (a window opened or moved;
                                       at most 8 kept), so a close comes within milliseconds of its time
    ``{p}:fc:counts``           hash   ``{outcome}`` and ``{outcome}:{name}`` -> count (queued, throttled,
                                       refused, skipped, evicted, admitted, debounced)

Step-level concurrency keys (ADR 019, :mod:`flowcore.stepkey_store`)
    ``{p}:sk:active:{key}``     zset   tasks (``{wf}|{step}|{index}``) holding a slot of the key -> taken (ms)
    ``{p}:sk:tok:{key}``        hash   holder -> token of the attempt that took the slot ("" reserved by a pump)
    ``{p}:sk:q:{key}``          zset   tasks waiting for the key (parked: no job, no worker) -> arrival sequence
    ``{p}:sk:limits``           hash   key -> its limit, as last declared
    ``{p}:sk:keys``             zset   keys with holders or waiters -> when the sweep looks at them next (ms)
    ``{p}:sk:seq``              string arrival sequence of waiting tasks
    ``{p}:sk:counts``           hash   ``admitted``, ``queued``, ``released``, ``swept`` -> count

Metrics (ADR 020, :mod:`flowcore.counters`; never expire, never deleted with a workflow)
    ``{p}:metrics:counters``    hash   monotonic counters and histogram buckets, incremented in the commit that
                                       finishes a task, a step or a workflow (fields in flowcore.counters)
    ``{p}:metrics:names``       zset   workflow name -> its first finish (ms); the first N are Prometheus labels

Pools and agents
    ``{p}:pools:services``      hash   pool service id -> registration JSON (url, capacity, warm keys)
    ``{p}:pools:heartbeat``     zset   pool service id -> last heartbeat (ms)
    ``{p}:agents``              hash   agent id -> agent record JSON
    ``{p}:kept:{service}``      hash   container id -> kept container record JSON (cleanup policy keep)
    ``{p}:keptidx:order``       zset   kept container id -> kept at (s), across all pool services (overall cap)
    ``{p}:keptidx:owner``       hash   kept container id -> the pool service that kept it (and alone removes it)
    ``{p}:keptidx:evict``       hash   kept container id -> its owner: removals the owner carries out on its sweep
    ``{p}:keptidx:seen``        zset   pool service id -> last sweep of its kept containers (s)

Secrets
    ``{p}:secrets``             hash   secret name -> JSON {ct, created_at, updated_at}: the value sealed with
                                       AES-GCM under the stack's secrets key (flowcore.secretstore)

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

    # durable waits (ADR 012)
    def waiters(self, event_type: str) -> str:
        return f"{self.prefix}:waiting:{event_type}"

    def event_log(self, event_type: str) -> str:
        return f"{self.prefix}:evlog:{event_type}"

    def waiters_paths(self, event_type: str) -> str:
        """hash: payload path -> how many waiters of the type are filed under it (flowcore.waitindex)."""
        return f"{self.prefix}:waitpaths:{event_type}"

    def waiters_scan(self, event_type: str) -> str:
        """set: waiters of the type that no index covers (read on every publish)."""
        return f"{self.prefix}:waitscan:{event_type}"

    def waiters_index(self, digest: str) -> str:
        """set: waiters filed under one (type, path, value) (flowcore.waitindex.digest)."""
        return f"{self.prefix}:waitix:{digest}"

    @property
    def watched_event_types(self) -> str:
        """zset: event type -> until when (ms) some workflow may wait for it; only those types are logged."""
        return f"{self.prefix}:evtypes:watched"  # not under evlog: an event type may be called "watched"

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

    @property
    def replication_barrier(self) -> str:
        return f"{self.prefix}:replication:barrier"

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

    @property
    def secrets(self) -> str:
        """hash: secret name -> JSON {ct, created_at, updated_at}, AES-GCM sealed (flowcore.secretstore)."""
        return f"{self.prefix}:secrets"

    def kept(self, service_id: str) -> str:
        return f"{self.prefix}:kept:{service_id}"

    @property
    def kept_order(self) -> str:
        return f"{self.prefix}:keptidx:order"

    @property
    def kept_owner(self) -> str:
        return f"{self.prefix}:keptidx:owner"

    @property
    def kept_evict(self) -> str:
        return f"{self.prefix}:keptidx:evict"

    @property
    def kept_seen(self) -> str:
        return f"{self.prefix}:keptidx:seen"

    # flow control (ADR 013)
    def fc_run(self, wf_id: str) -> str:
        return f"{self.prefix}:fc:run:{wf_id}"

    def fc_active(self, slot_id: str) -> str:
        return f"{self.prefix}:fc:active:{slot_id}"

    def fc_window(self, slot_id: str) -> str:
        return f"{self.prefix}:fc:window:{slot_id}"

    def fc_queue(self, slot_id: str) -> str:
        return f"{self.prefix}:fc:q:{slot_id}"

    @property
    def fc_slots(self) -> str:
        return f"{self.prefix}:fc:slots"

    @property
    def fc_pending(self) -> str:
        return f"{self.prefix}:fc:pending"

    def fc_debounce_window(self, slot_id: str) -> str:
        return f"{self.prefix}:fc:deb:{slot_id}"

    def fc_debounce_inputs(self, wf_id: str) -> str:
        return f"{self.prefix}:fc:debin:{wf_id}"

    @property
    def fc_debounce_due(self) -> str:
        return f"{self.prefix}:fc:debounce"

    @property
    def fc_debounce_closed(self) -> str:
        return f"{self.prefix}:fc:debclosed"

    @property
    def fc_debounce_wake(self) -> str:
        return f"{self.prefix}:fc:debwake"

    @property
    def fc_admitted(self) -> str:
        return f"{self.prefix}:fc:admitted"

    @property
    def fc_evict(self) -> str:
        return f"{self.prefix}:fc:evict"

    @property
    def fc_seq(self) -> str:
        return f"{self.prefix}:fc:seq"

    @property
    def fc_counts(self) -> str:
        return f"{self.prefix}:fc:counts"

    # monotonic metrics (ADR 020, flowcore.counters)
    @property
    def metric_counters(self) -> str:
        return f"{self.prefix}:metrics:counters"

    @property
    def metric_names(self) -> str:
        return f"{self.prefix}:metrics:names"

    # step-level concurrency keys (ADR 019, flowcore.stepkey_store)
    def sk_active(self, key: str) -> str:
        return f"{self.prefix}:sk:active:{key}"

    def sk_tokens(self, key: str) -> str:
        return f"{self.prefix}:sk:tok:{key}"

    def sk_queue(self, key: str) -> str:
        return f"{self.prefix}:sk:q:{key}"

    @property
    def sk_limits(self) -> str:
        return f"{self.prefix}:sk:limits"

    @property
    def sk_keys(self) -> str:
        return f"{self.prefix}:sk:keys"

    @property
    def sk_seq(self) -> str:
        return f"{self.prefix}:sk:seq"

    @property
    def sk_counts(self) -> str:
        return f"{self.prefix}:sk:counts"

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
