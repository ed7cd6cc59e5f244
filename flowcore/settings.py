"""Settings of every process: pydantic-settings classes with the ``FLOW_`` prefix.

Each entrypoint builds its settings once and passes them down; nothing else reads ``os.environ``.
Nested sections use ``__``: ``FLOW_REDIS__URL=redis://127.0.0.1:6390/0``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowcore.errors import ConfigError
from flowcore.ids import is_valid_id
from flowcore.limits import LimitsSection, check_pool_body, min_pool_body_bytes

DEFAULT_DEV_TOKEN = "default-token"


class RedisSection(BaseModel):
    url: str = Field("redis://127.0.0.1:6390/0", description="Redis holding records, state, queue.")
    prefix: str = Field("flow", description="Prefix of every key this stack writes.")
    username: str | None = Field(None, description="ACL user (Redis 6+); default: the URL's, else 'default'.")
    password: SecretStr | None = Field(None, description="requirepass or the ACL user's password; never logged.")
    # High availability (docs/reliability.md "High availability with Sentinel", ADR 021).
    sentinels: list[str] = Field(
        default_factory=list,
        description="host:port of Redis Sentinels (JSON list); set: every client finds the master through them "
        "and follows a failover (the URL then gives only the database and credentials).",
    )
    sentinel_master: str = Field("mymaster", min_length=1, description="The master's service name in Sentinel.")
    sentinel_username: str | None = Field(None, description="ACL user of the Sentinels, if they require one.")
    sentinel_password: SecretStr | None = Field(None, description="Password of the Sentinels; never logged.")
    sentinel_timeout_s: float = Field(0.5, gt=0, le=30, description="Bound on one question to one Sentinel.")
    min_replicas_ack: int = Field(
        0, ge=0, le=16, description="Submissions are acknowledged only once this many replicas hold them (WAIT); 0: "
        "as soon as the master has them.",
    )
    replica_ack_timeout_ms: int = Field(
        1000, ge=1, le=60_000, description="How long a submission waits for min_replicas_ack before it is answered 503.",
    )

    @field_validator("sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: list[str]) -> list[str]:
        from flowcore.sentinel import parse_address  # the one parser of host:port (and its error message)

        for item in value:
            parse_address(item)
        return value


class PoolClientSection(BaseModel):
    url: str = Field("http://127.0.0.1:8090", description="Pool service used when none is registered.")
    request_timeout_s: float = Field(30.0, gt=0, description="Extra time over the step timeout.")


TRACE_EXPORTERS = ("none", "console", "otlp", "redis")


class TracingSection(BaseModel):
    """OpenTelemetry of one process (docs/observability.md). Every span is sampled."""

    exporter: str = Field(
        "redis",
        description="Comma-separated: none, console, otlp, redis (the span store the dashboard reads).",
    )
    otlp_endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces URL.")
    otlp_headers: SecretStr = Field(SecretStr(""), description="Headers for the OTLP endpoint: 'k=v,k2=v2'.")
    otlp_timeout_s: float = Field(10.0, gt=0, description="Bound on one OTLP export, retries included.")
    service_name: str | None = Field(None, description="service.name; default flow-gateway, flow-worker, ...")
    export_delay_ms: int = Field(1000, ge=10, le=60_000, description="Batching delay before spans are sent.")
    store_max_spans: int = Field(5000, ge=10, description="Spans the Redis store keeps per workflow.")
    store_retention_s: float = Field(7 * 86400.0, ge=60, description="Expiry of a workflow's stored spans.")

    @field_validator("exporter")
    @classmethod
    def _exporters(cls, value: str) -> str:
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = [n for n in names if n not in TRACE_EXPORTERS]
        if unknown:
            raise ValueError(f"unknown exporter {unknown[0]!r}; use any of {', '.join(TRACE_EXPORTERS)}")
        return ",".join(dict.fromkeys(names)) or "none"

    @property
    def exporters(self) -> tuple[str, ...]:
        """The configured exporters; empty when tracing is off."""
        return tuple(n for n in self.exporter.split(",") if n != "none")

    def headers(self) -> dict[str, str]:
        """``otlp_headers`` as a mapping (the OTEL_EXPORTER_OTLP_HEADERS format)."""
        pairs = (p.split("=", 1) for p in self.otlp_headers.get_secret_value().split(",") if "=" in p)
        return {k.strip(): v.strip() for k, v in pairs if k.strip()}


NETWORK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
TASK_USER_PATTERN = r"^[0-9]{1,10}(:[0-9]{1,10})?$"


class TaskPolicySection(BaseModel):
    """What steps may ask for, and what they get when they ask for nothing (docs/security.md).

    One section shared by the gateway (refuses a definition at submission), the worker (computes the
    same pool keys as the pool) and the pool service (resolves every task, refuses what is not allowed):
    ``FLOW_POLICY__ALLOWED_NETWORKS='["none","etl"]'`` configures all three from one environment.
    """

    allowed_networks: list[str] = Field(
        default_factory=lambda: ["none"],
        description="Network modes a step may name: 'none' and user-defined networks. Never host or container:*.",
    )
    default_task_user: str = Field(
        "65534:65534", pattern=TASK_USER_PATTERN, description="uid[:gid] of task processes when a step names none."
    )
    allow_root_tasks: bool = Field(False, description="Let a step run as uid or gid 0 (user: '0').")
    default_read_only_root: bool = Field(
        True, description="Read-only root filesystem (with a scratch tmpfs) when a step does not say."
    )
    default_cpu: float = Field(1.0, gt=0, description="CPU cores of a task when its step names none.")
    default_memory_mb: int = Field(512, ge=6, description="Memory limit (MiB) of a task when its step names none.")
    default_pids: int = Field(256, ge=8, description="Process limit of a task's container when its step names none.")
    max_cpu: float = Field(4.0, gt=0, description="Largest resources.cpu a step may ask for.")
    max_memory_mb: int = Field(4096, ge=6, description="Largest resources.memory_mb a step may ask for.")
    max_pids: int = Field(4096, ge=8, description="Largest resources.pids a step may ask for.")
    allow_cross_workflow_reuse: bool = Field(
        True, description="Let a pool opt in to pool.scope 'image' (warm containers shared across workflows)."
    )
    allow_host_network: bool = Field(
        False,
        description="Let 'host' be in allowed_networks: only for trusted steps on a development machine "
        "(a host-network step reaches every service on loopback).",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for name in value:
            if name == "host":
                continue  # checked with allow_host_network below
            if name.startswith("container:"):
                raise ValueError(f"network {name!r} can never be allowed: it shares the host's or a container's stack")
            if not re.match(NETWORK_NAME_PATTERN, name):
                raise ValueError(f"invalid network name {name!r}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> TaskPolicySection:
        if "host" in self.allowed_networks and not self.allow_host_network:
            raise ValueError("network 'host' can be allowed only with allow_host_network: it shares the host's stack")
        if not self.allow_root_tasks and 0 in _user_ids(self.default_task_user):
            raise ValueError("default_task_user is root (uid or gid 0) but allow_root_tasks is false")
        for name in ("cpu", "memory_mb", "pids"):
            if getattr(self, f"default_{name}") > getattr(self, f"max_{name}"):
                raise ValueError(f"default_{name} exceeds max_{name}")
        return self


def _user_ids(user: str) -> tuple[int, ...]:
    return tuple(int(part) for part in user.split(":"))


class _Common(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOW_", env_nested_delimiter="__", extra="ignore")
    redis: RedisSection = Field(default_factory=RedisSection)
    # FLOW_LIMITS__MAX_STEPS, ...: sizes every process enforces where the data is (flowcore.limits)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    log_level: str = "INFO"
    tracing: TracingSection = Field(default_factory=TracingSection)


class _PoolPeer(_Common):
    """The processes on either side of the worker/gateway -> pool boundary (docs/security.md)."""

    pool_token: SecretStr = Field(
        SecretStr(""),
        description="Shared secret of the pool API and of pool registrations (FLOW_POOL_TOKEN), not a user token. "
        "Unset on loopback: a random one kept in pool_token_file.",
    )
    pool_token_file: str = Field(
        ".flow/pool.token", description="Where a loopback stack without FLOW_POOL_TOKEN keeps its generated token."
    )
    secrets_key: SecretStr = Field(
        SecretStr(""),
        description="Key of the stored secrets (FLOW_SECRETS_KEY, 32+ characters; the gateway's and the workers'"
        " must be the same). Unset on loopback: a random one kept in secrets_key_file.",
    )
    secrets_key_file: str = Field(
        ".flow/secrets.key", description="Where a loopback stack without FLOW_SECRETS_KEY keeps its generated key."
    )


TOKEN_SCOPES = ("admin", "write", "read", "trigger", "approve")
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TOKEN_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"


class ApiToken(BaseModel):
    """One scoped API token, configured by the SHA-256 of its value (``python -m gateway.tokens``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="Shown in answers and sessions; never the token.")
    hash: str = Field(pattern=TOKEN_HASH_PATTERN, description="'sha256:' + the hex SHA-256 of the token.")
    scopes: list[Literal["admin", "write", "read", "trigger", "approve"]] = Field(min_length=1)
    workflows: list[str] | None = Field(
        None, description="Only these workflows and the runs of these templates (ids); unset: every workflow."
    )

    @field_validator("workflows")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            bad = [v for v in value if not is_valid_id(v)]
            if bad:
                raise ValueError(f"invalid workflow id {bad[0]!r}")
        return value


class GatewaySettings(_PoolPeer):
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8081, ge=1, le=65535)
    reuse_port: bool = Field(
        False, description="Bind with SO_REUSEPORT so that several gateway processes serve one port (FLOW_PROCESSES)."
    )
    sse_max_streams: int = Field(
        200, ge=1, le=10_000, description="Live event streams (SSE) one gateway process serves at once (503 past it)."
    )
    sse_max_streams_per_client: int = Field(
        20, ge=1, le=10_000, description="Live event streams one token or session holds at once per process (429)."
    )
    tokens: list[SecretStr] = Field(default_factory=list, description="Accepted API tokens (admin scope).")
    api_tokens: list[ApiToken] = Field(
        default_factory=list, description="Scoped tokens, by hash: [{name, hash, scopes, workflows?}]."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values served (port ignored); empty: loopback names and the bind host; '*': any.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto are believed.",
    )
    auth_throttle_burst: int = Field(10, ge=1, description="Failed logins or tokens a client may make in a row.")
    auth_throttle_refill_s: float = Field(
        6.0, gt=0, description="A throttled client regains one attempt per this many seconds."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger bodies are answered 413.")
    max_document_depth: int = Field(
        64, ge=4, le=500, description="Deepest nesting of a JSON or YAML body; deeper is answered 413."
    )
    max_document_nodes: int = Field(
        200_000, ge=1000, description="Values a JSON or YAML body may hold, YAML aliases expanded; more is 413."
    )
    parse_in_thread_bytes: int = Field(
        32_768, ge=0, description="Bodies at least this large are parsed in a worker thread, off the event loop."
    )
    pool: PoolClientSection = Field(default_factory=PoolClientSection)
    policy: TaskPolicySection = Field(default_factory=TaskPolicySection, description="What steps may ask for.")
    idempotency_retention_s: float = Field(
        86400.0, ge=60, description="How long event ids, delivery ids and Idempotency-Keys are remembered."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {item!r} is not an IP address or network") from None
        return value

    @field_validator("api_tokens")
    @classmethod
    def _unique_names(cls, value: list[ApiToken]) -> list[ApiToken]:
        names = [t.name for t in value]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"api_tokens: the name {dup!r} is used twice")
        return value

    def accepted_tokens(self) -> list[str]:
        """Admin tokens in clear (FLOW_TOKENS); refuses an unauthenticated non-loopback bind.

        ``default-token`` only when no token at all is configured (neither FLOW_TOKENS nor FLOW_API_TOKENS).
        """
        configured = [t.get_secret_value() for t in self.tokens if t.get_secret_value()]
        if configured or self.api_tokens:
            return configured
        if not is_loopback(self.host):
            raise ConfigError(
                f"the gateway binds {self.host}, which is not loopback, and no token is configured: "
                "set FLOW_TOKENS='[\"...\"]'"
            )
        return [DEFAULT_DEV_TOKEN]


class WorkerSettings(_PoolPeer):
    poll_delay_s: float = Field(
        0.005, gt=0, le=1.0, description="Least time between two polls of a busy worker (arq's poll delay)."
    )
    idle_wait_s: float = Field(
        2.0, gt=0, le=60.0, description="Longest an idle worker blocks on its wake-up list before it polls anyway; "
        "commits that enqueue jobs wake it at once, deferred jobs when they fall due (ADR 010).",
    )
    max_jobs: int = Field(100, ge=1, le=10_000)
    lease_ttl_s: float = Field(5.0, gt=0.5, description="A running task's lease; lapsed leases are taken over.")
    lease_renew_s: float = Field(1.0, gt=0.05)
    reaper_interval_s: float = Field(1.0, gt=0.05)
    max_takeovers: int = Field(5, ge=1, description="Takeovers of one attempt before it fails as lost.")
    pool_grace_s: float = Field(
        300.0, ge=0, description="How long a task waits (with backoff) for an unreachable pool service to come back."
    )
    claim_timeout_s: float = Field(
        5.0, gt=0, description="A queued task whose job left the queue but was not claimed by then is re-dispatched."
    )
    job_marker_ttl_s: float = Field(
        30.0, ge=2, description="arq's in-progress marker of a job; renewed with the task's lease, so a dead "
        "worker's job is visible again this long after it died (arq's default: the job timeout + 10 s).",
    )
    commit_patience_s: float = Field(
        120.0, ge=0, description="How long a finished task's result waits for an unreachable Redis before it is dropped.",
    )
    redis_backoff_max_s: float = Field(5.0, gt=0, description="Longest wait between two tries to reach Redis.")
    pool: PoolClientSection = Field(default_factory=PoolClientSection)
    policy: TaskPolicySection = Field(default_factory=TaskPolicySection, description="Same as the pool's.")


class PoolSettings(_PoolPeer):
    # FLOW_POOL_HOST / FLOW_POOL_PORT, so one environment can configure the gateway and the pool.
    # (Only these names: honcho exports PORT to every process, and an alias ignores the env prefix.)
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("FLOW_POOL_HOST"))
    port: int = Field(8090, ge=1, le=65535, validation_alias=AliasChoices("FLOW_POOL_PORT"))
    service_id: str = Field("pool-1", description="Unique per pool service; labels its containers.")
    docker_host: str | None = Field(None, description="Engine socket; default DOCKER_HOST or /var/run/docker.sock.")
    work_dir: str = Field(".flow/pool", description="Host directory for task I/O and agent sockets.")
    default_image: str = "agentainer-flow/python:3.11"
    default_min_size: int = 0
    default_max_size: int = 8
    default_idle_timeout_s: float = 300.0
    acquire_timeout_s: float = Field(30.0, description="Bounded wait for a busy pool before the fallback.")
    on_exhausted: str = Field("cold", description="'cold' (start a one-shot container) or 'error'.")
    health_interval_s: float = Field(2.0, gt=0, description="Health checks of idle and busy containers.")
    heartbeat_s: float = Field(1.0, gt=0, description="Registration refresh in Redis.")
    default_max_uses: int = Field(1000, ge=1, description="Tasks a pooled container serves before retirement.")
    pull_missing: bool = Field(False, description="Try to pull a missing image (bounded by pull_timeout_s).")
    pull_timeout_s: float = Field(10.0, gt=0)
    agent_start_timeout_s: float = Field(20.0, gt=0, description="A new container's agent must answer by then.")
    task_grace_s: float = Field(5.0, gt=0, description="Backstop over a task's timeout before its container dies.")
    keep_containers_on_shutdown: bool = Field(False, description="Leave idle containers for a restart to adopt.")
    capacity: int = Field(32, ge=1, description="Concurrent tasks this service advertises when registering.")
    extra_labels: dict[str, str] = Field(default_factory=dict, description="More labels on every container.")
    max_body_bytes: int = Field(
        default_factory=lambda data: min_pool_body_bytes(data["limits"]),
        ge=1024,
        description="Largest request body of the pool API; larger ones are answered 413. Default: one whole step"
        " output (FLOW_LIMITS__MAX_OUTPUT_MIB) plus a module source, the smallest that lets every output be the"
        " next step's input (21 MiB); a smaller value is refused at start-up.",
    )
    policy: TaskPolicySection = Field(default_factory=TaskPolicySection, description="What steps may ask for.")
    max_containers: int = Field(
        32, ge=1, description="Containers this service holds at once (pooled and one-shot); more wait, then on_exhausted."
    )
    workflow_idle_timeout_s: float = Field(
        15.0, gt=0, description="Idle containers of a workflow-scoped pool are removed after this, whatever min_size."
    )
    # Kept containers (cleanup policy ``keep``, ADR 014): paused, outside max_containers, capped here.
    keep_max: int = Field(20, ge=0, le=1000, description="Kept containers this service holds; past it the oldest go.")
    keep_max_per_pool: int = Field(
        5, ge=0, le=1000, description="Kept containers of one pool key; past it the oldest of that key go."
    )
    keep_for_max_s: float = Field(86400.0, gt=0, description="Upper bound of any keep_for (longer asks are cut).")
    kept_sweep_s: float = Field(5.0, gt=0, description="How often expired kept containers are looked for.")
    kept_copy_max_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, le=1 << 30, description="Largest archive copied out of a kept container."
    )
    keep_max_total: int = Field(
        100, ge=0, le=10000,
        description="Kept containers across all pool services sharing this Redis; past it the oldest go"
        " (removed by the service that kept them).",
    )
    kept_owner_gone_s: float = Field(
        3600.0, gt=0,
        description="A pool service not seen for this long is gone for good: others forget its kept records.",
    )
    agent_watch_s: float = Field(1.0, gt=0, description="How often agents' restart policies (on_error) are applied.")

    @model_validator(mode="after")
    def _body_holds_an_output(self) -> PoolSettings:
        """A step's whole output must fit into the request that carries it as the next step's input."""
        problem = check_pool_body(self.limits, self.max_body_bytes)
        if problem is not None:
            raise ValueError(problem)
        return self


class SchedulerSettings(_Common):
    tick_s: float = Field(0.5, gt=0, le=60, description="Longest sleep between two looks at due triggers.")
    batch: int = Field(100, ge=1, le=10_000, description="Due triggers handled per look.")
    idempotency_retention_s: float = Field(86400.0, ge=60, description="How long a fire's key is remembered.")
    retention_s: float = Field(
        30 * 86400.0,
        ge=0,
        description="Finished workflows, with everything they own, are deleted this long after they finished"
        " (FLOW_RETENTION_S; 0 keeps them forever). Templates of triggers are kept.",
    )
    retention_sweep_s: float = Field(60.0, gt=0, le=86400, description="How often the retention sweep runs.")
    retention_batch: int = Field(500, ge=1, le=1000, description="Workflows deleted per sweep at most.")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
