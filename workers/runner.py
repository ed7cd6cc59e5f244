"""Running one task: claim it, keep its lease alive, call the pool, commit the result.

The lease is what lets another worker take a task over when this one dies (see
:mod:`workers.reaper`); losing it (the workflow was cancelled, failed fast, or another worker took
over) makes this worker kill its container task and drop the result. Every engine transition goes
through :meth:`flowcore.store.WorkflowStore.transact`, so the result is applied exactly once.

A completion also claims one successor it made ready (``engine.complete(..., claim_next=True)``), and
the same job runs it next: no arq job, no wake-up, no separate claim (ADR 010). That successor is
under a lease from the commit on, so a worker that dies running it is taken over like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from flowcore import engine, fairness, secretrefs
from flowcore.aiotasks import cancel_and_wait
from flowcore.engine import EngineEnv, Plan
from flowcore.errors import NotFound, ServiceUnavailable
from flowcore.keyspace import Keyspace, lease_member, task_field
from flowcore.pool_api import ErrorKind, TaskError, TaskRequest, TaskResult
from flowcore.records import Snapshot
from flowcore.secretrefs import Redactor, redact_result
from flowcore.secretstore import SecretStore, SecretUnavailable, run_ids
from flowcore.stepkey_store import StepKeys
from flowcore.store import WorkflowStore, task_job_id
from flowcore.tracing_spans import StepAttempt
from workers import stepslots
from workers.pool_client import PoolClient
from workers.resilience import Backoff
from workers.routing import PoolRouter

log = logging.getLogger(__name__)


class TaskRunner:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keyspace,
        pool: PoolClient,
        router: PoolRouter,
        lease_ttl_s: float,
        lease_renew_s: float,
        max_takeovers: int,
        pool_grace_s: float = 300.0,
        marker_ttl_s: float = 30.0,
        commit_patience_s: float = 120.0,
        secrets: SecretStore | None = None,
    ) -> None:
        self.secrets = secrets  # decrypts the stored secrets a task's env refers to (flowcore.secretstore)
        self.redis = redis
        self.keys = keys
        self.store = WorkflowStore(redis, keys)
        self.slots = StepKeys(self.store)  # step-level concurrency keys (ADR 019)
        self.pool = pool
        self.router = router
        self.lease_ttl_s = lease_ttl_s
        self.lease_renew_s = lease_renew_s
        self.max_takeovers = max_takeovers
        self.pool_grace_s = pool_grace_s  # how long a task waits for a pool service to come back
        self.marker_ttl_s = marker_ttl_s  # arq's in-progress marker of the job, renewed with the lease
        self.commit_patience_s = commit_patience_s  # how long a result waits for Redis to come back

    def env(self) -> EngineEnv:
        return EngineEnv(
            now=time.time(),
            lease_ttl_s=self.lease_ttl_s,
            max_takeovers=self.max_takeovers,
            pool_grace_s=self.pool_grace_s,
        )

    async def transact(
        self, wf_id: str, fn: Callable[[Snapshot, EngineEnv], Plan], task: tuple[str, int] | None = None
    ) -> Plan | None:
        """One transition; ``task`` names the task it concerns, so its record (and map item) is read up front."""
        hint = (task_field(*task),) if task is not None else ()
        try:
            return await self.store.transact(wf_id, lambda snap: fn(snap, self.env()), tasks=hint, items=hint)
        except NotFound:
            log.info("workflow %s is gone; dropping its task", wf_id)
            return None

    async def run(self, wf_id: str, step_id: str, index: int, token: str, traceparent: str | None = None) -> str:
        """Claim the job's task and run it; then run each successor its completion claimed (ADR 010)."""
        plan: Plan | None
        # A step with a concurrency key: claimed holding a slot of it, or parked (ADR 019).
        plan, held = await stepslots.claim(self, self.slots, wf_id, step_id, index, token)
        if plan is None or plan.request is None:
            return "stale"
        # The job's in-progress marker, renewed with the lease of whichever task the job runs.
        marker = in_progress_key_prefix + task_job_id(wf_id, step_id, index, token)
        outcome = "stale"
        task = (step_id, index, token)
        ran = 0  # tasks this job ran; past fairness.RUN_NEXT_MAX the next successor queues (ADR 018)
        while True:
            ran += 1
            try:
                plan, outcome = await self._run_claimed(
                    wf_id, *task, plan, traceparent, marker, claim_next=ran < fairness.RUN_NEXT_MAX
                )
            finally:
                if held is not None:  # the attempt ended, whatever its result: its slot goes (once)
                    await asyncio.shield(stepslots.release(self.slots, held))
                    held = None
            if plan is None or plan.claimed is None or plan.request is None:
                return outcome
            task = (plan.claimed.step_id, plan.claimed.index, plan.claimed.token)
            traceparent = plan.snap.trace  # what its job would have carried

    async def _run_claimed(
        self, wf_id: str, step_id: str, index: int, token: str, plan: Plan, traceparent: str | None, marker: str,
        *, claim_next: bool = True,
    ) -> tuple[Plan | None, str]:
        """Run a claimed task and commit its result, claiming a successor it makes ready if there is one
        (unless ``claim_next`` is false: then every successor goes through the queue)."""
        assert plan.request is not None
        request = plan.request
        attempt = StepAttempt(plan.snap, request, traceparent)  # the span of this attempt
        request.traceparent = attempt.traceparent
        member = lease_member(wf_id, step_id, index, token)
        lease_lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(member, marker, lease_lost))
        base_url = self.router.fallback_url
        redactor = Redactor(())
        try:
            base_url = await self.router.choose(request)
            sent, redactor = await self._with_secrets(request, plan.snap)
            with attempt.calling():
                result = await self._execute(base_url, sent, lease_lost)
            if result.error is not None and result.error.kind == ErrorKind.POOL_UNAVAILABLE:
                self.router.mark_down(base_url)
        except SecretUnavailable as exc:  # not set, or another key: the step cannot run as defined
            attempt.failed(exc)
            error = TaskError(kind=ErrorKind.INPUT, message=exc.message)
            result = TaskResult(task_id=request.task_id, ok=False, error=error)
        except asyncio.CancelledError:
            # The worker is shutting down (SIGTERM): hand the task over now instead of letting
            # its lease lapse, and stop its container task.
            attempt.finish(None, note="handed over: worker shutting down")
            await asyncio.shield(self._hand_over(base_url, request.task_id, wf_id, step_id, index, token))
            await self._stop(renewer)
            raise
        except Exception as exc:  # a bug or outage here fails the attempt; it must not loop on takeovers
            log.exception("task %s failed in the worker", request.task_id)
            attempt.failed(exc)
            error = TaskError(kind=ErrorKind.RUNTIME, message=f"worker error: {type(exc).__name__}: {exc}")
            result = TaskResult(task_id=request.task_id, ok=False, error=error)
        result = redact_result(result, redactor)  # the pool masked them too; nothing clear reaches Redis
        try:
            # The lease stays renewed while the result waits for Redis: across a short outage this
            # worker's commit, not a takeover, usually wins.
            committed = await self._commit(
                wf_id,
                lambda s, e: engine.complete(s, e, step_id, index, token, result, claim_next=claim_next),
                (step_id, index),
            )
        finally:
            await self._stop(renewer)
            attempt.finish(result)
        return committed, "ok" if result.ok else "failed"

    async def _with_secrets(self, request: TaskRequest, snap: Snapshot) -> tuple[TaskRequest, Redactor]:
        """The request with the secrets its env refers to filled in (and listed for masking), if the
        run may use them (a secret limited to some workflows: flowcore.secretstore)."""
        names = secretrefs.references(request.env)
        if not names:
            return request, Redactor(())
        if self.secrets is None:
            raise SecretUnavailable("this worker cannot read secrets: it has no secrets store")
        values = await self.secrets.values(names, run_ids(snap.wf_id, snap.origin))
        env = secretrefs.substitute(request.env, values)
        return request.model_copy(update={"env": env, "redact": sorted(values.values())}), Redactor(values.values())

    @staticmethod
    async def _stop(task: asyncio.Task[None]) -> None:
        await cancel_and_wait(task)

    async def _commit(
        self, wf_id: str, fn: Callable[[Snapshot, EngineEnv], Plan], task: tuple[str, int]
    ) -> Plan | None:
        """Commit a result, waiting (with backoff) up to ``commit_patience_s`` for an unreachable Redis.

        Given up, the result is lost and the task's lease lapses: another worker runs it again.
        """
        deadline = time.monotonic() + self.commit_patience_s
        backoff = Backoff(max_s=2.0)
        while True:
            try:
                return await self.transact(wf_id, fn, task)
            except ServiceUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("result of %s waits for redis: %s", wf_id, exc)
                await asyncio.sleep(backoff.next_delay_s())

    async def _execute(self, base_url: str, request: TaskRequest, lease_lost: asyncio.Event) -> TaskResult:
        call = asyncio.create_task(self.pool.execute(base_url, request))
        lost = asyncio.create_task(lease_lost.wait())
        try:
            done, _ = await asyncio.wait({call, lost}, return_when=asyncio.FIRST_COMPLETED)
            if call in done:
                return call.result()
            # The lease is gone: the workflow was cancelled or the task handed to another worker.
            await self.pool.cancel(base_url, request.task_id)
            try:
                return await asyncio.wait_for(asyncio.shield(call), timeout=10.0)
            except TimeoutError:
                call.cancel()
                return TaskResult(
                    task_id=request.task_id,
                    ok=False,
                    error=TaskError(kind=ErrorKind.CANCELLED, message="lease lost"),
                )
        finally:
            lost.cancel()
            if not call.done():
                call.cancel()

    async def _renew(self, member: str, marker: str, lease_lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_renew_s)
            expiry_ms = (time.time() + self.lease_ttl_s) * 1000
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(self.keys.leases, {member: expiry_ms}, xx=True, ch=True)
                    pipe.pexpire(marker, int(self.marker_ttl_s * 1000))
                    changed, _ = await pipe.execute()
            except Exception as exc:  # a Redis blip must not kill the task; the next renewal retries
                log.warning("lease renewal failed: %r", exc)
                continue
            if not changed:
                lease_lost.set()
                return

    async def _hand_over(self, base_url: str, task_id: str, wf_id: str, step_id: str, index: int, token: str) -> None:
        try:
            async with asyncio.timeout(5.0):
                await self.pool.cancel(base_url, task_id)
                await self.transact(wf_id, lambda s, e: engine.lost(s, e, step_id, index, token), (step_id, index))
            log.info("handed %s over on shutdown", task_id)
        except Exception:  # the lease lapses on its own; a reaper takes over then
            log.exception("hand-over of %s failed", task_id)

    async def deadline(self, wf_id: str) -> None:
        await self.transact(wf_id, engine.deadline)
