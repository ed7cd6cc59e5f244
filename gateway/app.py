"""The gateway app factory: routes, middleware, error handlers and the lifespan that owns Redis."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowcore import pooltoken, redisconn, secretstore
from flowcore.firing import Firing
from flowcore.keyspace import Keyspace
from flowcore.replica_ack import ReplicaAck
from flowcore.settings import GatewaySettings
from flowcore.state import StateStore
from flowcore.store import WorkflowStore
from flowcore.triggerstore import TriggerStore
from gateway import openapi
from gateway.dashboard import pages as dashboard
from gateway.dashboard.masking import MaskSecrets
from gateway.dashboard.sessions import SessionStore
from gateway.errors import HANDLERS, RETRY_AFTER_S
from gateway.middleware import BodyLimit, HostCheck, TokenAuth
from gateway.pathids import check_path_ids
from gateway.replica_ack import ReplicaAckMiddleware
from gateway.routes import (
    approvals,
    intake,
    kept,
    logs,
    metrics,
    pools,
    retention,
    retry,
    secrets,
    spans,
    state,
    stream,
    triggers,
    workflows,
)
from gateway.scopes import AuthConfig
from gateway.streamgate import StreamGate

API_VERSION = "1.0.0"


async def healthz(request: Request) -> Response:
    """Liveness and Redis reachability (no auth)."""
    try:
        await request.app.state.redis.ping()
    except Exception as exc:
        body = {"status": "degraded", "redis": f"unreachable: {type(exc).__name__}"}
        return JSONResponse(body, 503, headers={"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse({"status": "ok", "redis": "ok", "version": API_VERSION})


def replica_ack(settings: GatewaySettings) -> ReplicaAck:
    """How many replicas must hold a write before the API acknowledges it (0: the master alone)."""
    return ReplicaAck(settings.redis.min_replicas_ack, settings.redis.replica_ack_timeout_ms)


def create_app(settings: GatewaySettings, *, redis: Redis | None = None) -> Starlette:
    """Build the gateway. Refuses (ConfigError) a non-loopback bind without configured tokens."""
    auth = AuthConfig.from_settings(settings)  # tokens by hash, scopes, throttle, hosts, proxies
    pool_token = pooltoken.resolve(settings.pool_token, settings.pool_token_file)
    keys = Keyspace(settings.redis.prefix)
    # Stored secrets (flowcore.secretstore): None disables them on a non-loopback bind without a key.
    secrets_key = secretstore.resolve_key(settings.secrets_key, settings.secrets_key_file, bind_host=settings.host)
    cipher = secretstore.SecretCipher(secrets_key) if secrets_key is not None else None
    sessions = SessionStore(keys, book=auth.book)  # the dashboard's; connected in the lifespan

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        conn = redis or redisconn.connect(settings.redis)
        if redis is None:
            await redisconn.check_credentials(conn, settings.redis)
        app.state.redis = conn
        app.state.keys = keys
        app.state.settings = settings
        app.state.store = WorkflowStore(conn, keys)
        app.state.states = StateStore(conn, keys)
        app.state.triggers = TriggerStore(conn, keys)
        app.state.firing = Firing(conn, keys)
        app.state.secrets = secretstore.SecretStore(conn, keys, cipher)
        app.state.stream_gate = StreamGate(settings.sse_max_streams, settings.sse_max_streams_per_client)
        # The pool token goes with every call to a pool service (forwarded requests, metrics).
        app.state.pool_http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0), headers=pooltoken.bearer(pool_token)
        )
        app.state.pool_token = pool_token
        sessions.connect(conn)
        app.state.sessions = sessions
        try:
            yield
        finally:
            await app.state.pool_http.aclose()
            if redis is None:
                await conn.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/openapi.json", openapi.openapi, methods=["GET"]),
        *workflows.routes,
        *retention.routes,
        *state.routes,
        *pools.routes,
        *kept.routes,
        *triggers.routes,
        *intake.routes,
        *logs.routes,
        *metrics.routes,
        *stream.routes,
        *retry.routes,
        *secrets.routes,
        *approvals.routes,
        *spans.routes,
    ]
    check_path_ids(routes)  # one id rule for every {workflow_id}, {trigger_id}, {key}...
    app = Starlette(
        routes=[*routes, *dashboard.routes()],  # the dashboard's pages stay out of the OpenAPI document
        middleware=[
            Middleware(HostCheck, allowed=auth.hosts),  # first: a foreign Host gets nothing else
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
            Middleware(TokenAuth, book=auth.book, sessions=sessions, throttle=auth.throttle, trusted=auth.trusted),
            Middleware(MaskSecrets),
            # Last (innermost): a write answered 2xx waits for FLOW_REDIS__MIN_REPLICAS_ACK replicas (ADR 021).
            Middleware(ReplicaAckMiddleware, ack=replica_ack(settings), retry_after_s=RETRY_AFTER_S),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.openapi = openapi.build_document(routes, API_VERSION)
    app.state.auth = auth
    return app
