"""Session fixtures that start the real services the integration and e2e tiers run against.

A missing service is a failure, never a skip: ``redis_server`` starts its own redis-server on a free loopback
port, ``docker_host`` runs ``scripts/ensure_docker.sh`` (which reuses or starts the project's engine),
``base_image`` runs ``scripts/ensure_base_image.sh`` and ``example_images`` runs
``scripts/build_example_images.sh``. Unit tests request none of them and need nothing running.

Every container a test creates carries the labels of ``test_labels`` (``io.agentainer.flow.test=1`` and this
session's id); the session reaps its own at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "agentainer-flow/python:3.11"
TEST_LABEL = "io.agentainer.flow.test"
SESSION_LABEL = "io.agentainer.flow.test.session"
SESSION_ID = uuid.uuid4().hex[:12]
_SESSION_STARTED = datetime.now(UTC)
_TIERS = ("unit", "integration", "e2e")

# The engine this session used, if any: the reaper only talks to Docker when a test did.
_engine: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier from its directory, so ``-m unit`` / ``-m 'not e2e'`` select by tier."""
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().parts
        if Path(*parts[: len(tests_dir.parts)]) == tests_dir and len(parts) > len(tests_dir.parts):
            tier = parts[len(tests_dir.parts)]
            if tier in _TIERS:
                item.add_marker(getattr(pytest.mark, tier))


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this session alone: free loopback port, own dir, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make bootstrap` (installs Debian's redis-server)")
    data_dir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log_path = data_dir / "redis.log"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(log_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    server = RedisServer("127.0.0.1", port, data_dir)
    client = redis.Redis(host=server.host, port=port, socket_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                proc.kill()
                pytest.fail(f"redis-server on port {port} did not answer (exit {proc.poll()}):\n{log}")
            time.sleep(0.05)
        yield server
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's redis (db 0), flushed before the test."""
    with redis.Redis(host=redis_server.host, port=redis_server.port) as client:
        client.flushall()
    return redis_server.url


def _run_script(name: str, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(REPO_ROOT / "scripts" / name)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/{name} did not finish within {timeout_s:.0f}s:\n{exc.stderr or ''}")
    except OSError as exc:
        pytest.fail(f"cannot run scripts/{name}: {exc}")


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The engine's address (``unix://...``), found or started by scripts/ensure_docker.sh.

    Also exported as ``DOCKER_HOST`` so that processes the tests start use the same engine.
    """
    result = _run_script("ensure_docker.sh", dict(os.environ), timeout_s=120)
    url = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not url:
        pytest.fail(f"no Docker engine (scripts/ensure_docker.sh exit {result.returncode}):\n{result.stderr}")
    os.environ["DOCKER_HOST"] = url
    _engine["url"] = url
    return url


@pytest.fixture(scope="session")
def base_image(docker_host: str) -> str:
    """``agentainer-flow/python:3.11``, built or tagged by scripts/ensure_base_image.sh when missing."""
    result = _run_script("ensure_base_image.sh", {**os.environ, "DOCKER_HOST": docker_host}, timeout_s=900)
    if result.returncode != 0:
        pytest.fail(
            f"no base image (scripts/ensure_base_image.sh exit {result.returncode}):\n{result.stderr}"
        )
    return BASE_IMAGE


@pytest.fixture(scope="session")
def example_images(base_image: str, docker_host: str) -> list[str]:
    """The examples' images (``agentainer-flow/wordcount:<content tag>``), built by
    scripts/build_example_images.sh when missing or stale: offline, on ``base_image``, about a second
    the first time and a skip afterwards."""
    result = _run_script("build_example_images.sh", {**os.environ, "DOCKER_HOST": docker_host}, timeout_s=300)
    if result.returncode != 0:
        pytest.fail(
            f"no example images (scripts/build_example_images.sh exit {result.returncode}):\n{result.stderr}"
        )
    return result.stdout.split()


@pytest.fixture(scope="session")
def test_labels() -> dict[str, str]:
    """Labels for every container a test creates; the session reaps containers carrying them."""
    return {TEST_LABEL: "1", SESSION_LABEL: SESSION_ID}


def _docker(url: str, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args],
        env={**os.environ, "DOCKER_HOST": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )
    return result.stdout


def _parse_docker_time(text: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds (``2026-01-02T03:04:05.123456789Z``), to the microsecond."""
    stamp, _, fraction = text.strip().removesuffix("Z").partition(".")
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return datetime.fromisoformat(stamp).replace(microsecond=micros, tzinfo=UTC)


def _reap_test_containers(url: str) -> None:
    """Remove this session's test containers: those with its session label, and unlabelled-session ones
    created while it ran. Containers of a concurrent session on the shared engine (other session id) stay."""
    ids = _docker(url, "ps", "-aq", "--no-trunc", "--filter", f"label={TEST_LABEL}=1").split()
    if not ids:
        return
    doomed = []
    fmt = f'{{{{.Id}}}}|{{{{index .Config.Labels "{SESSION_LABEL}"}}}}|{{{{.Created}}}}'
    # Containers may go between the listing and the inspection (a pool's sweep, another session on the
    # shared engine): inspect answers for the others and exits 1, which is fine here.
    for line in _docker(url, "inspect", "--format", fmt, *ids, check=False).splitlines():
        cid, session, created = line.split("|")
        ours = session == SESSION_ID
        unclaimed = session in ("", "<no value>") and _parse_docker_time(created) >= _SESSION_STARTED
        if ours or unclaimed:
            doomed.append(cid)
    if doomed:
        _docker(url, "rm", "-f", *doomed, check=False)


@pytest.fixture(scope="session", autouse=True)
def _reap_containers_at_end() -> Iterator[None]:
    yield
    url = _engine.get("url")
    if url is not None:
        _reap_test_containers(url)
