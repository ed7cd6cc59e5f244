"""Settings of every process: pydantic-settings classes with the ``FLOW_`` prefix.

Each entrypoint builds its settings once and passes them down; nothing else reads ``os.environ``.
Nested sections use ``__``: ``FLOW_REDIS__URL=redis://127.0.0.1:6390/0``.
"""

from __future__ import annotations

import ipaddress

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowcore.errors import ConfigError

DEFAULT_DEV_TOKEN = "default-token"


class RedisSection(BaseModel):
    url: str = Field("redis://127.0.0.1:6390/0", description="Redis holding records, state, queue.")
    prefix: str = Field("flow", description="Prefix of every key this stack writes.")


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


class _Common(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOW_", env_nested_delimiter="__", extra="ignore")
    redis: RedisSection = Field(default_factory=RedisSection)
    log_level: str = "INFO"
    tracing: TracingSection = Field(default_factory=TracingSection)


class GatewaySettings(_Common):
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8081, ge=1, le=65535)
    tokens: list[SecretStr] = Field(default_factory=list, description="Accepted API tokens (admin scope).")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger bodies are answered 413.")
    pool: PoolClientSection = Field(default_factory=PoolClientSection)
    idempotency_retention_s: float = Field(
        86400.0, ge=60, description="How long event ids, delivery ids and Idempotency-Keys are remembered."
    )

    def accepted_tokens(self) -> list[str]:
        """Tokens this gateway accepts; refuses an unauthenticated non-loopback bind."""
        configured = [t.get_secret_value() for t in self.tokens if t.get_secret_value()]
        if configured:
            return configured
        if not is_loopback(self.host):
            raise ConfigError(
                f"the gateway binds {self.host}, which is not loopback, and no token is configured: "
                "set FLOW_TOKENS='[\"...\"]'"
            )
        return [DEFAULT_DEV_TOKEN]


class WorkerSettings(_Common):
    poll_delay_s: float = Field(0.005, gt=0, le=1.0, description="arq poll delay (default 0.5 s adds ~280 ms).")
    max_jobs: int = Field(100, ge=1, le=10_000)
    lease_ttl_s: float = Field(5.0, gt=0.5, description="A running task's lease; lapsed leases are taken over.")
    lease_renew_s: float = Field(1.0, gt=0.05)
    reaper_interval_s: float = Field(1.0, gt=0.05)
    max_takeovers: int = Field(5, ge=1, description="Takeovers of one attempt before it fails as lost.")
    pool: PoolClientSection = Field(default_factory=PoolClientSection)


class PoolSettings(_Common):
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


class SchedulerSettings(_Common):
    tick_s: float = Field(0.5, gt=0, le=60, description="Longest sleep between two looks at due triggers.")
    batch: int = Field(100, ge=1, le=10_000, description="Due triggers handled per look.")
    idempotency_retention_s: float = Field(86400.0, ge=60, description="How long a fire's key is remembered.")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
