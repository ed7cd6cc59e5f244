"""CPU per process, from ``/proc/PID/stat`` (utime + stime) before and after a run.

On a shared, noisy machine CPU seconds per process are far steadier than wall times. A
:class:`Probe` finds the processes of one stack by role (gateway, worker, pool, scheduler, the
supervisor that relays their logs, the stack's redis-server, the Docker engine) and, through
their cgroups, the stack's containers; :meth:`Probe.snapshot` reads them all, and :func:`delta`
subtracts two snapshots per process (a process born in between counts from zero; one that died in
between is lost, and :attr:`Delta.lost` says how many).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")

# Role of a Procfile process by the module it runs (``python -m gateway``).
MODULE_ROLES = {"gateway": "gateway", "workers": "worker", "pool": "pool", "scheduler": "scheduler"}
# The order of the columns in the report: our processes, then Redis, then the rest.
ROLE_ORDER = ("gateway", "worker", "pool", "scheduler", "supervisor", "redis", "containers", "engine")
OURS = ("gateway", "worker", "pool", "scheduler", "supervisor", "redis", "containers")


def parse_stat(text: str) -> tuple[int, int]:
    """(ppid, utime + stime in clock ticks) of one ``/proc/PID/stat`` line.

    The command name (field 2) is in parentheses and may hold spaces and parentheses: the fields
    that follow are counted from the last ``)``.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is the state (field 3): ppid is field 4, utime 14, stime 15.
    return int(rest[1]), int(rest[11]) + int(rest[12])


def ticks_to_s(ticks: int) -> float:
    return ticks / CLK_TCK


def read_stat(pid: int) -> tuple[int, int] | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None:
            out[pid] = stat[0]
    return out


def descendants(root: int, parent_of: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def module_role(args: list[str]) -> str | None:
    """gateway / worker / pool / scheduler for ``python -m <module>``; supervisor for supervise.py."""
    for i, arg in enumerate(args[:-1]):
        if arg == "-m" and args[i + 1] in MODULE_ROLES:
            return MODULE_ROLES[args[i + 1]]
    if any(a.endswith("supervise.py") for a in args):
        return "supervisor"
    return None


def redis_pids(port: int) -> list[int]:
    """redis-server processes listening on ``port`` (their title is ``redis-server 127.0.0.1:PORT``)."""
    out = []
    for pid in all_pids():
        args = cmdline(pid)
        if args and "redis-server" in args[0] and args[0].rstrip().endswith(f":{port}"):
            out.append(pid)
    return out


def engine_pids(docker_host: str, parent_of: dict[int, int]) -> set[int]:
    """The dockerd serving ``docker_host``, its containerd, and the container shims of that containerd."""
    socket = docker_host.removeprefix("unix://")
    for pid in parent_of:
        args = cmdline(pid)
        if args and args[0].endswith("dockerd") and any(socket in a for a in args):
            found = {pid} | descendants(pid, parent_of)
            exec_root = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--exec-root"), None)
            if exec_root:
                for other in parent_of:
                    other_args = cmdline(other)
                    if other_args and "containerd-shim" in other_args[0] and any(exec_root in a for a in other_args):
                        found.add(other)
            return found
    return set()


def container_cpu_s(container_ids: Iterable[str]) -> dict[str, float]:
    """CPU seconds of each running container from its cgroup (v1 cpuacct or v2 cpu.stat); unknown ones left out."""
    out: dict[str, float] = {}
    for cid in container_ids:
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        v2 = [Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"), Path(f"/sys/fs/cgroup/docker/{cid}/cpu.stat")]
        try:
            if v1.exists():
                out[cid] = int(v1.read_text().strip()) / 1e9
                continue
            for path in v2:
                if path.exists():
                    usage = next(line.split()[1] for line in path.read_text().splitlines() if line.startswith("usage_usec"))
                    out[cid] = int(usage) / 1e6
                    break
        except (OSError, ValueError, StopIteration):
            continue
    return out


def service_containers(docker_host: str, service_id: str) -> list[str]:
    """Full ids of the running containers of one pool service (by its label)."""
    try:
        result = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc", "--filter", "label=io.agentainer.flow=1",
             "--filter", f"label=io.agentainer.flow.service={service_id}"],
            capture_output=True, text=True, timeout=20, check=False, env=dict(os.environ, DOCKER_HOST=docker_host),
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.split()


@dataclass
class Snapshot:
    """CPU seconds per (role, pid or container id) at one instant."""

    cpu: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass
class Delta:
    """CPU seconds used per role between two snapshots."""

    by_role: dict[str, float]
    lost: int = 0  # processes or containers seen before and gone after (their CPU is not counted)
    pids: dict[str, int] = field(default_factory=dict)  # processes (containers) seen per role at the end
    lost_by_role: dict[str, int] = field(default_factory=dict)

    def total(self, roles: Iterable[str] = OURS) -> float:
        return sum(self.by_role.get(r, 0.0) for r in roles)


def delta(before: Snapshot, after: Snapshot) -> Delta:
    by_role: dict[str, float] = {}
    pids: dict[str, int] = {}
    for key, value in after.cpu.items():
        role = key[0]
        by_role[role] = by_role.get(role, 0.0) + max(0.0, value - before.cpu.get(key, 0.0))
        pids[role] = pids.get(role, 0) + 1
    lost_by_role: dict[str, int] = {}
    for key in before.cpu:
        if key not in after.cpu:
            lost_by_role[key[0]] = lost_by_role.get(key[0], 0) + 1
    return Delta(by_role, sum(lost_by_role.values()), pids, lost_by_role)


@dataclass
class Probe:
    """The processes of one stack, found again at every snapshot (a restarted process is picked up)."""

    supervisor_pid: int | None
    redis_port: int | None
    docker_host: str | None = None
    service_id: str | None = None
    extra: dict[str, Callable[[], Iterable[int]]] = field(default_factory=dict)  # role -> pids (peers)

    def processes(self) -> dict[int, str]:
        parent_of = parents()
        roles: dict[int, str] = {}
        if self.supervisor_pid is not None and self.supervisor_pid in parent_of:
            roles[self.supervisor_pid] = "supervisor"
            tree = descendants(self.supervisor_pid, parent_of)
            unnamed = []
            for pid in tree:
                role = module_role(cmdline(pid))
                if role is None:
                    unnamed.append(pid)
                else:
                    roles[pid] = role
            for pid in unnamed:  # a child of a role process (a uvicorn or multiprocessing child)
                ancestor = parent_of.get(pid)
                while ancestor is not None and ancestor not in roles and ancestor in tree:
                    ancestor = parent_of.get(ancestor)
                if ancestor is not None and ancestor in roles:
                    roles[pid] = roles[ancestor]
        if self.redis_port is not None:
            for pid in redis_pids(self.redis_port):
                roles[pid] = "redis"
        if self.docker_host:
            for pid in engine_pids(self.docker_host, parent_of):
                roles.setdefault(pid, "engine")
        for role, finder in self.extra.items():
            for pid in finder():
                roles[pid] = role
        return roles

    def snapshot(self, containers: bool = True) -> Snapshot:
        snap = Snapshot()
        for pid, role in self.processes().items():
            stat = read_stat(pid)
            if stat is not None:
                snap.cpu[(role, str(pid))] = ticks_to_s(stat[1])
        if containers and self.docker_host and self.service_id:
            ids = service_containers(self.docker_host, self.service_id)
            for cid, seconds in container_cpu_s(ids).items():
                snap.cpu[("containers", cid)] = seconds
        return snap

    def found(self) -> dict[str, int]:
        """How many processes each role has right now (for the report's header)."""
        counts: dict[str, int] = {}
        for role in self.processes().values():
            counts[role] = counts.get(role, 0) + 1
        return counts
