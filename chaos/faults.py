"""The faults of a chaos run, injected at random moments by one thread.

Each is what the platform must survive by itself: a process of the stack SIGKILLed (its supervisor
starts it again), redis-server SIGKILLed and started again after a few seconds (AOF, fsync every
second), a step's container killed by the engine under its task.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.procs import redis_pids
from bench.stack import docker_host
from chaos.stack import PrivateStack

Fault = Callable[[], str | None]  # does it; says what it hit, or None when there was nothing to hit


@dataclass
class Injector:
    stack: PrivateStack
    rng: random.Random
    every_s: tuple[float, float] = (3.0, 8.0)
    redis_outage_s: tuple[float, float] = (1.0, 4.0)
    events: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: float = field(default_factory=time.monotonic)

    def faults(self) -> dict[str, Fault]:
        return {
            "kill worker": lambda: self._kill_role("worker"),
            "kill pool": lambda: self._kill_role("pool"),
            "kill gateway": lambda: self._kill_role("gateway"),
            "kill scheduler": lambda: self._kill_role("scheduler"),
            "restart redis": self._restart_redis,
            "kill container": self._kill_container,
        }

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        faults = self.faults()
        names = sorted(faults)
        while not self._stop.wait(self.rng.uniform(*self.every_s)):
            name = self.rng.choice(names)
            try:
                target = faults[name]()
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                target = f"not injected: {exc!r}"
            if target is not None:
                self.events.append(
                    {"at_s": round(time.monotonic() - self._started, 1), "fault": name, "target": target}
                )

    def _kill_role(self, role: str) -> str | None:
        pids = self.stack.pids().get(role, [])
        if not pids:
            return None
        pid = self.rng.choice(pids)
        os.kill(pid, signal.SIGKILL)
        return f"{role} pid {pid}"

    def _restart_redis(self) -> str | None:
        pids = redis_pids(self.stack.redis_port)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        outage_s = self.rng.uniform(*self.redis_outage_s)
        self._stop.wait(outage_s)
        self.stack.start_redis()
        return f"redis down {outage_s:.1f} s"

    def _kill_container(self) -> str | None:
        ids = self.stack.containers()
        if not ids:
            return None
        target = self.rng.choice(ids)
        subprocess.run(["docker", "kill", target], capture_output=True, check=False,
                       env=dict(os.environ, DOCKER_HOST=docker_host()))
        return f"container {target[:12]}"
