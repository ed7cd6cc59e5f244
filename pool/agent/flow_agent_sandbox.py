"""What keeps one task from the next inside a container: its directory, its uid, and the clean-up.

Stdlib only, Python 3.9 or newer: it runs inside step containers, as part of the agent (root in the
container, with a handful of capabilities; see docs/security.md).

- :func:`make_task_dir` builds ``{root}/{n}/``: the directory itself and ``input.json`` belong to the
  agent (the task cannot replace them with links or pipes), ``output.json`` and ``state.json`` are
  empty files the task's uid may write, ``work/`` and ``tmp/`` are the task's own.
- :func:`kill_task_processes` kills every process the task left behind: all processes of its uid
  (it cannot change uid: no capabilities, ``no-new-privileges``), or, when the task shares the
  agent's uid, every process but the agent and the spared ones (a container), or its process group
  (an agent run by hand on a host, as the unit tests do).
- :func:`read_task_file` reads what a task wrote without trusting it: no links followed, regular
  files only (a named pipe cannot block the agent), bounded size.
- :func:`first_to_go_on_oom` makes task processes, not the agent, the memory limit's victims.
- :func:`scrub` removes what the task's uid left in the container's shared scratch places.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
from typing import Iterable, NamedTuple, Optional

SHARED_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
MAX_KILL_ROUNDS = 200


class TaskUser(NamedTuple):
    uid: int
    gid: int


def parse_user(text: object) -> Optional[TaskUser]:
    """``"uid"`` or ``"uid:gid"`` (numbers only); None for nothing or the agent's own uid."""
    if not isinstance(text, str) or not text:
        return None
    uid_text, _, gid_text = text.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        raise ValueError(f"user must be 'uid' or 'uid:gid' (numbers), not {text!r}")
    uid = int(uid_text)
    gid = int(gid_text) if gid_text else uid
    if uid == os.getuid() and gid == os.getgid():
        return None
    return TaskUser(uid, gid)


class TaskDir(NamedTuple):
    path: str

    @property
    def input(self) -> str:
        return os.path.join(self.path, "input.json")

    @property
    def output(self) -> str:
        return os.path.join(self.path, "output.json")

    @property
    def state(self) -> str:
        return os.path.join(self.path, "state.json")

    @property
    def work(self) -> str:
        return os.path.join(self.path, "work")

    @property
    def tmp(self) -> str:
        return os.path.join(self.path, "tmp")


def make_task_dir(root: str, name: str, input_json: bytes, user: Optional[TaskUser]) -> TaskDir:
    """Create the task's directory (see the module docstring for who owns what)."""
    task = make_empty_task_dir(root, name, user)
    write_input(task, input_json)
    return task


def write_input(task: TaskDir, input_json: bytes) -> None:
    """The task's ``input.json``: a new file of the agent's, never one that was already there."""
    fd = os.open(task.input, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, input_json)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)


def is_untouched(task: TaskDir, user: Optional[TaskUser]) -> bool:
    """A directory made ahead is as it was made: no input yet, empty files and directories, owners right.

    Made ahead after the previous task's processes were killed, it should be; if anything is off
    (a process of the uid that escaped the clean-up wrote there), the agent makes a new one.
    """
    uid = user.uid if user is not None else os.geteuid()
    try:
        if os.path.lexists(task.input):
            return False
        for path in (task.output, task.state):
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size != 0 or info.st_uid != uid or info.st_nlink != 1:
                return False
        for path in (task.work, task.tmp):
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or os.listdir(path):
                return False
        return len(os.listdir(task.path)) == 4
    except OSError:
        return False


def make_empty_task_dir(root: str, name: str, user: Optional[TaskUser]) -> TaskDir:
    """A task's directory without its ``input.json`` (made ahead of the task, or for it)."""
    os.makedirs(root, mode=0o755, exist_ok=True)
    task = TaskDir(os.path.join(root, name))
    os.mkdir(task.path, 0o755)
    os.chmod(task.path, 0o755)  # whatever the umask
    for path in (task.output, task.state):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if user is not None:
                os.fchown(fd, user.uid, user.gid)
        finally:
            os.close(fd)
    for path in (task.work, task.tmp):
        os.mkdir(path, 0o700)
        if user is not None:
            os.chown(path, user.uid, user.gid)
    return task


def recycle_task_dir(task: TaskDir, user: Optional[TaskUser]) -> bool:
    """Make a finished task's directory ready for the next task; False when it must be rebuilt.

    Called after the task's processes were killed and its files read. Only a directory left as it
    was made is kept (no input, ``output.json``/``state.json`` still single-link regular files of
    the uid, emptied; ``work/`` and ``tmp/`` empty): anything else (links, pipes, extra entries,
    files in ``work/``) is removed and made anew, which costs a few syscalls more.
    """
    uid = user.uid if user is not None else os.geteuid()
    try:
        os.unlink(task.input)
        if sorted(os.listdir(task.path)) != ["output.json", "state.json", "tmp", "work"]:
            return False
        for path in (task.output, task.state):
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != uid:
                    return False
                if info.st_size:
                    os.ftruncate(fd, 0)
                if stat.S_IMODE(info.st_mode) != 0o600:
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        for path in (task.work, task.tmp):
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or os.listdir(path):
                return False
            if stat.S_IMODE(info.st_mode) != 0o700:
                os.chmod(path, 0o700)  # a directory (lstat), and no process of the task is left
    except OSError:
        return False
    return True


def remove_task_dir(task: TaskDir) -> None:
    # shutil.rmtree works on directory descriptors and never follows a link (safe against swaps).
    shutil.rmtree(task.path, ignore_errors=True)


class FileRead(NamedTuple):
    text: Optional[str]  # None: absent or empty (the step did not write it)
    error: Optional[str]


def read_task_file(path: str, limit_bytes: int) -> FileRead:
    """A file the task may have written: never through a link, only a regular file, at most
    ``limit_bytes``. Non-blocking open, so a named pipe cannot stall the caller."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return FileRead(None, None)
    except OSError as exc:
        return FileRead(None, f"{name} cannot be read: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return FileRead(None, f"{name} is not a regular file")
        if info.st_size > limit_bytes:
            return FileRead(None, f"{name} is larger than the limit of {limit_bytes} bytes")
        chunks = []
        left = limit_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit_bytes:
        return FileRead(None, f"{name} is larger than the limit of {limit_bytes} bytes")
    if not data.strip():
        return FileRead(None, None)
    return FileRead(data.decode(errors="replace"), None)


def first_to_go_on_oom(pid: int) -> None:
    """Make a task's process the kernel's first choice when the container runs out of memory.

    Raising a score needs no capability. The agent keeps its own score, so an allocation-hungry
    task is killed (and reported ``oom``) rather than the agent (which would lose the channel).
    Children inherit the score.
    """
    with contextlib.suppress(OSError), open(f"/proc/{pid}/oom_score_adj", "w") as handle:
        handle.write("1000")


def _status(pid: str) -> tuple[set[int], str, int]:
    """The uids (real, effective, saved, fs), state letter and parent of a process; empty when gone."""
    uids: set[int] = set()
    state = ""
    parent = 0
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("State:"):
                    state = line.split()[1]
                elif line.startswith("PPid:"):
                    parent = int(line.split()[1])
                elif line.startswith("Uid:"):
                    uids = {int(v) for v in line.split()[1:]}
                    break
    except (OSError, ValueError, IndexError):
        return set(), "", 0
    return uids, state, parent


def kill_task_processes(user: Optional[TaskUser], spare: Iterable[int], group: Optional[int]) -> int:
    """SIGKILL what a task left running; returns how many processes were killed.

    ``spare`` are the function zygotes: they and their direct children (the children they forked
    ahead, waiting for a task) live on. A task's own processes are never a zygote's children: the
    task's child is killed by pid first, and what it forked is reparented to PID 1, not to the zygote.
    Repeated until a pass finds none, so a process forking while we look cannot slip through (the
    pids limit bounds the rounds).
    """
    me = os.getpid()
    zygotes = set(spare)
    keep = {me, 1, *zygotes}
    if user is None and me != 1:
        # An agent on a host (tests): the task's own process group is all it may touch.
        if group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        return 0
    killed = 0
    for _ in range(MAX_KILL_ROUNDS):
        found = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in keep:
                continue
            uids, state, parent = _status(name)
            if not uids or state in ("Z", "X") or parent in zygotes:
                continue
            if user is not None and user.uid not in uids:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                found += 1
        killed += found
        if not found:
            break
    return killed


def reap_orphans(tracked: Iterable[int]) -> None:
    """As PID 1, reap the zombies of orphans the kernel gave us (not the children we wait for)."""
    if os.getpid() != 1:
        return
    skip = set(tracked)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] == "Z" and len(fields) > 1 and fields[1] == "1":
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(int(name), os.WNOHANG)


def scrub(user: Optional[TaskUser], places: Iterable[str] = SHARED_SCRATCH) -> None:
    """Remove what the task's uid owns directly under the shared scratch places (never a link's target)."""
    if user is None:
        return
    for place in places:
        try:
            entries = os.listdir(place)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(place, entry)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if info.st_uid != user.uid:
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class TaskDirs:
    """The agent's task directories under ``root``: the next one is made (or the last one recycled)
    after a task, off the next task's time, and taken when it is still untouched."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.seq = 0
        self.ahead: Optional[tuple[TaskDir, Optional[TaskUser]]] = None

    def take(self, user: Optional[TaskUser]) -> TaskDir:
        """The directory made ahead for ``user`` when it is untouched; else a new one."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            if ahead[1] == user and is_untouched(ahead[0], user):
                return ahead[0]
            remove_task_dir(ahead[0])
        return make_empty_task_dir(self.root, self._name(), user)

    def make_ahead(self, used: Optional[TaskDir], user: Optional[TaskUser], *, idle: bool) -> None:
        """The next task's directory: the one just used when it recycles cleanly, else a new one (only
        while no other task runs, ``idle``)."""
        if used is not None and self.ahead is None and idle and recycle_task_dir(used, user):
            self.ahead = (used, user)
            return
        if used is not None:
            remove_task_dir(used)
        if self.ahead is not None or not idle:
            return
        try:
            self.ahead = (make_empty_task_dir(self.root, self._name(), user), user)
        except OSError:
            self.ahead = None

    def _name(self) -> str:
        self.seq += 1
        return f"t{self.seq}"
