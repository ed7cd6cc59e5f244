"""A Redis master, its replicas and three Sentinels on free loopback ports, for failover tests and chaos runs.

Every process is started here (``redis-server``, ``redis-server <conf> --sentinel``) with ``Popen``, so
only these are ever killed. Sentinel timings are set low (``down_after_ms``, ``failover_timeout_ms``)
so a failover takes about a second or two instead of the production defaults' 30 s and more.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

SERVICE = "mymaster"
QUORUM = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """One redis-server (data node or Sentinel) of the cluster."""

    name: str
    port: int
    dir: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(["redis-server", *self.args], cwd=self.dir, stdout=log,
                                         stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.dir / "server.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class SentinelCluster:
    """A master and ``replicas`` replicas (AOF on), watched by three Sentinels."""

    home: Path
    replicas: int = 1
    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    data: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def _data_node(self, name: str, port: int, master_port: int | None) -> Node:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", ".", "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]
        if master_port is not None:
            args += ["--replicaof", "127.0.0.1", str(master_port)]
        return Node(name, port, self.home / name, args)

    def start(self, timeout_s: float = 30) -> None:
        master_port = free_port()
        self.data = [self._data_node("redis-0", master_port, None)]
        self.data += [self._data_node(f"redis-{i}", free_port(), master_port) for i in range(1, self.replicas + 1)]
        for node in self.data:
            node.start()
        self._wait_synced(master_port, timeout_s)  # then the Sentinels' first look at the master sees its replicas
        for i in range(3):
            port = free_port()
            node_dir = self.home / f"sentinel-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            conf = node_dir / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {node_dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.sentinels.append(Node(f"sentinel-{i}", port, node_dir, [str(conf), "--sentinel"]))
        for node in self.sentinels:
            node.start()
        self.wait_ready(timeout_s)

    def _wait_synced(self, master_port: int, timeout_s: float) -> None:
        master = next(n for n in self.data if n.port == master_port)
        deadline = time.monotonic() + timeout_s
        while online_replicas(master) < self.replicas:
            if time.monotonic() > deadline or not all(n.alive for n in self.data):
                tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self.data)
                raise RuntimeError(f"the replicas did not sync:\n{tails}")
            time.sleep(0.05)

    def wait_ready(self, timeout_s: float) -> None:
        """Until the replicas are in sync and every Sentinel knows them and its peers."""
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            dead = [n.name for n in self.data + self.sentinels if not n.alive]
            if dead or time.monotonic() > deadline:
                tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self.data + self.sentinels)
                raise RuntimeError(f"the Sentinel cluster did not come up (dead: {dead}):\n{tails}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            master = self.master_node()
            with master.client() as client:
                if int(client.info("replication").get("connected_slaves", 0)) < self.replicas:
                    return False
            for node in self.sentinels:
                with node.client() as client:
                    state = client.sentinel_master(SERVICE)
                    if int(state["num-slaves"]) < self.replicas or int(state["num-other-sentinels"]) < 2:
                        return False
        except (redis.RedisError, RuntimeError):
            return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the Sentinels' majority names it (None while they disagree or are down)."""
        seen: dict[int, int] = {}
        for node in self.sentinels:
            try:
                with node.client() as client:
                    address = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if address:
                port = int(address[1])
                seen[port] = seen.get(port, 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best is not None and best[1] >= QUORUM else None

    def master_node(self) -> Node:
        port = self.master_port()
        node = next((n for n in self.data if n.port == port), None)
        if node is None:
            raise RuntimeError(f"no data node on the master's port {port}")
        return node

    def wait_promoted(self, old_port: int, timeout_s: float = 30) -> tuple[Node, float]:
        """Until the Sentinels name another master that answers as one; returns it and the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            port = self.master_port()
            if port is not None and port != old_port:
                node = next(n for n in self.data if n.port == port)
                try:
                    with node.client() as client:
                        if client.info("replication").get("role") == "master":
                            return node, time.monotonic() - started
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in self.sentinels)
        raise RuntimeError(f"no replica was promoted within {timeout_s:.0f} s:\n{tails}")

    def wait_replicas(self, count: int, timeout_s: float = 30) -> None:
        """Until the current master has ``count`` replicas in sync."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if online_replicas(self.master_node()) >= count:
                    return
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the master has fewer than {count} replicas after {timeout_s:.0f} s")

    def stop(self) -> None:
        for node in self.sentinels + self.data:
            node.stop()


def online_replicas(master: Node) -> int:
    """Replicas in sync with ``master`` (0 when it cannot be asked)."""
    try:
        with master.client() as client:
            info = client.info("replication")
    except redis.RedisError:
        return 0
    return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online")
