"""The agent state bridge: a deployed agent reads and writes its own workflow's state, and nothing else.

An agent deployed with ``workflow_id`` (``POST /v1/agents``) gets, like a pooled container's agent
(ADR 009), a directory of the pool's own, ``{work_dir}/{service}/a/{agent suffix}`` (its parent 0700),
mounted read-only at ``/flow/state``, in which the pool listens on ``state.sock``. The container gets
``FLOW_STATE_SOCKET`` and a per-agent ``FLOW_STATE_TOKEN`` in its environment (its label keeps only the
token's SHA-256, so a restarted pool service can listen again for the agents it adopts). The host opens
no path the container can write, and the container needs no network: Redis and the pool API stay out
of its reach.

Each connection must open with the token; then one request at a time (:mod:`pool.agent_bridge_protocol`).
The workflow is the agent's, whatever a frame says; writes are refused once the workflow has finished.
Bounds, per agent (:class:`~pool.agent_bridge_protocol.BridgeLimits`): connections open at once, a
request rate with a burst (over it a request is answered ``ok: false`` and not run), a frame's size
(a longer one closes the connection), a ``wait``'s length.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from flowcore.errors import FlowError, NotFound
from flowcore.keyspace import Keyspace
from flowcore.pool_api import StateOp
from flowcore.state import StateStore, apply_state_ops
from pool.agent.flow_agent_wire import encode_message
from pool.agent_bridge_protocol import (
    WRITES,
    BadRequest,
    BridgeLimits,
    BridgeRequest,
    TokenBucket,
    changed,
    parse_hello,
    parse_request,
    request_id,
)
from pool.channel import token_digest
from pool.runtime import LABEL_WORKFLOW, Bind

log = logging.getLogger(__name__)

MOUNT_DIR = "/flow/state"
SOCKET_NAME = "state.sock"
LABEL_STATE_TOKEN = "io.agentainer.flow.state_token_sha256"
FINISHED = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Grant:
    """What a container deployed for a workflow gets: its env, a label and a read-only mount."""

    env: dict[str, str]
    labels: dict[str, str]
    binds: list[Bind]


@dataclass(eq=False)
class _Endpoint:
    agent_id: str
    workflow_id: str
    token_sha256: str
    directory: Path
    bucket: TokenBucket
    server: asyncio.AbstractServer | None = None
    connections: set[asyncio.StreamWriter] = field(default_factory=set)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    refused_connections: int = 0


def _fresh_dir(path: Path) -> None:
    """Make ``path`` an empty directory of ours. A directory that is there stays (a running agent's
    bind mount holds its inode) and is emptied; anything else there (a link included) is removed,
    never followed."""
    try:
        mode: int | None = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    else:
        if mode is not None:
            os.unlink(path)
        path.mkdir(mode=0o755)
    os.chmod(path, 0o755)  # any uid of the container may connect; the token decides


class AgentBridge:
    """The per-agent listeners of one pool service (see the module docstring)."""

    def __init__(
        self, redis: Redis, keys: Keyspace, service_dir: Path, limits: BridgeLimits | None = None
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._store = StateStore(redis, keys)
        self.agents_dir = service_dir / "a"
        self.limits = limits or BridgeLimits()
        self._endpoints: dict[str, _Endpoint] = {}

    def directory(self, agent_id: str) -> Path:
        return self.agents_dir / agent_id.removeprefix("agent-")[:24]

    def grant(self, agent_id: str) -> tuple[str, Grant]:
        """A new token for ``agent_id`` and what its container must carry (before it is created)."""
        token = secrets.token_urlsafe(32)
        return token, Grant(
            env={"FLOW_STATE_SOCKET": f"{MOUNT_DIR}/{SOCKET_NAME}", "FLOW_STATE_TOKEN": token},
            labels={LABEL_STATE_TOKEN: token_digest(token)},
            binds=[Bind(str(self.directory(agent_id)), MOUNT_DIR, read_only=True)],
        )

    async def attach(self, agent_id: str, workflow_id: str) -> Grant:
        """Before an agent of ``workflow_id`` is created: a token, and the socket listening for it."""
        _, granted = self.grant(agent_id)
        await self.open(agent_id, workflow_id, granted.labels[LABEL_STATE_TOKEN])
        return granted

    async def reattach(self, agent_id: str, labels: Mapping[str, str]) -> bool:
        """After a restart: listen again for an adopted agent that was deployed for a workflow (a
        stopped one too: it may be started again)."""
        workflow_id, digest = labels.get(LABEL_WORKFLOW), labels.get(LABEL_STATE_TOKEN)
        if not workflow_id or not digest:
            return False
        try:
            await self.open(agent_id, workflow_id, digest)
        except OSError as exc:
            log.warning("cannot listen for agent %s again: %s", agent_id, exc)
            return False
        return True

    async def open(self, agent_id: str, workflow_id: str, token_sha256: str) -> Path:
        """Listen for ``agent_id`` (again, after a restart); returns the socket's path."""
        await self.close(agent_id)
        self.agents_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory = self.directory(agent_id)
        _fresh_dir(directory)
        endpoint = _Endpoint(
            agent_id=agent_id,
            workflow_id=workflow_id,
            token_sha256=token_sha256,
            directory=directory,
            bucket=TokenBucket(self.limits.rate_per_s, self.limits.burst, time.monotonic()),
        )
        path = directory / SOCKET_NAME

        async def arrived(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(endpoint, reader, writer)

        endpoint.server = await asyncio.start_unix_server(
            arrived, path=str(path), limit=self.limits.max_request_bytes
        )
        os.chmod(path, 0o666)
        self._endpoints[agent_id] = endpoint
        return path

    def is_open(self, agent_id: str) -> bool:
        return agent_id in self._endpoints

    def refused(self, agent_id: str) -> tuple[int, int]:
        """(connections refused over the cap or without the token, requests refused over the rate)."""
        endpoint = self._endpoints[agent_id]
        return endpoint.refused_connections, endpoint.bucket.refused

    async def close(self, agent_id: str, *, remove_dir: bool = True) -> None:
        """Stop listening for ``agent_id``; ``remove_dir=False`` keeps its (empty) directory for a
        restarted service to listen in again: the container's mount holds that directory."""
        endpoint = self._endpoints.pop(agent_id, None)
        if endpoint is None:
            return
        if endpoint.server is not None:
            endpoint.server.close()
        for writer in list(endpoint.connections):
            writer.close()
        for task in list(endpoint.handlers):
            task.cancel()
        for task in list(endpoint.handlers):
            with contextlib.suppress(BaseException):
                await task
        if remove_dir:
            shutil.rmtree(endpoint.directory, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(endpoint.directory / SOCKET_NAME)

    async def close_all(self, *, remove_dirs: bool = True) -> None:
        for agent_id in list(self._endpoints):
            await self.close(agent_id, remove_dir=remove_dirs)

    # -- one connection --------------------------------------------------------------------------

    async def _serve(self, endpoint: _Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(endpoint.connections) >= self.limits.max_connections:
            endpoint.refused_connections += 1
            await self._say(writer, {"t": "error", "error": f"at most {self.limits.max_connections} connections per agent"})
            writer.close()
            return
        endpoint.connections.add(writer)
        endpoint.handlers.add(task)
        try:
            if await self._welcome(endpoint, reader, writer):
                await self._requests(endpoint, reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            endpoint.connections.discard(writer)
            endpoint.handlers.discard(task)
            writer.close()

    async def _welcome(self, endpoint: _Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            line = await asyncio.wait_for(reader.readline(), self.limits.hello_timeout_s)
            offered = parse_hello(line)
        except (TimeoutError, ValueError) as exc:  # BadRequest, or a line over the limit
            endpoint.refused_connections += 1
            await self._say(writer, {"t": "error", "error": str(exc) or "no hello in time"})
            return False
        if not hmac.compare_digest(token_digest(offered), endpoint.token_sha256):
            endpoint.refused_connections += 1
            await self._say(writer, {"t": "error", "error": "wrong token"})
            return False
        await self._say(
            writer,
            {"t": "welcome", "agent_id": endpoint.agent_id, "workflow_id": endpoint.workflow_id,
             "limits": self.limits.public()},
        )
        return True

    async def _requests(self, endpoint: _Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than the limit: the stream cannot be resynchronised
                await self._say(writer, {"t": "error", "error": f"a frame is at most {self.limits.max_request_bytes} bytes"})
                return
            if not line:
                return
            if not line.strip():
                continue
            if not endpoint.bucket.take(time.monotonic()):
                await self._say(writer, _fail(request_id(line), f"too many requests: at most {self.limits.rate_per_s:g} per second"))
                continue
            try:
                request = parse_request(line)
            except BadRequest as exc:
                await self._say(writer, _fail(request_id(line), str(exc)))
                continue
            await self._say(writer, {"t": "reply", "rid": request.rid, **await self._answer(endpoint.workflow_id, request)})

    async def _say(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        if writer.is_closing():
            return
        writer.write(encode_message(message))
        await writer.drain()

    # -- one request -----------------------------------------------------------------------------

    async def _answer(self, workflow_id: str, request: BridgeRequest) -> dict[str, Any]:
        try:
            status = await self._redis.hget(self._keys.workflow(workflow_id), "status")
            if status is None:
                return {"ok": False, "error": f"workflow {workflow_id!r} not found"}
            if request.t in WRITES and (status.decode() if isinstance(status, bytes) else str(status)) in FINISHED:
                return {"ok": False, "error": f"workflow {workflow_id!r} has finished: its state is read-only"}
            return await self._run(workflow_id, request)
        except FlowError as exc:
            return {"ok": False, "error": exc.message}

    async def _read(self, workflow_id: str, key: str) -> tuple[bool, Any]:
        try:
            return True, await self._store.get(workflow_id, key)
        except NotFound as exc:
            if exc.field == "key":
                return False, None
            raise

    async def _run(self, workflow_id: str, request: BridgeRequest) -> dict[str, Any]:
        key = request.key
        if request.t == "get":
            found, value = await self._read(workflow_id, key)
            return {"ok": True, "found": found, "value": value}
        if request.t == "wait":
            deadline = time.monotonic() + request.timeout_s
            while True:
                found, value = await self._read(workflow_id, key)
                if changed(request.found, request.value, found, value) or time.monotonic() >= deadline:
                    return {"ok": True, "changed": changed(request.found, request.value, found, value),
                            "found": found, "value": value}
                await asyncio.sleep(self.limits.wait_poll_s)
        if request.t == "cas":
            apply_state_ops({}, [StateOp(op="set", key=key, value=request.value)])  # the size check of a set
            swapped = await self._store.compare_and_set(
                workflow_id, key, request.expected, request.value, expect_missing=request.missing
            )
            return {"ok": True, "swapped": swapped}
        if request.t == "delete":
            found, _ = await self._read(workflow_id, key)
            await self._store.apply(workflow_id, [StateOp(op="delete", key=key)])
            return {"ok": True, "found": found}
        value = 1 if request.t == "increment" and request.value is None else request.value
        new = await self._store.apply(workflow_id, [StateOp(op=request.t, key=key, value=value)])
        return {"ok": True, "value": new.get(key)}


def _fail(rid: int | None, error: str) -> dict[str, Any]:
    return {"t": "reply", "rid": rid, "ok": False, "error": error}


__all__ = ["FINISHED", "LABEL_STATE_TOKEN", "MOUNT_DIR", "SOCKET_NAME", "AgentBridge", "Grant"]
