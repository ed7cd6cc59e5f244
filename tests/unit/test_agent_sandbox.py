"""Task directories made ahead and recycled by the agent (pool/agent/flow_agent_sandbox.py).

Run as the test's own uid (no uid switch): what is checked is the decision to keep or rebuild a
directory, from what a task may leave in it. The same on the real engine, as a hostile task:
tests/integration/test_isolation_attacks.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from pool.agent import flow_agent_sandbox as sandbox


def used_dir(root: Path) -> sandbox.TaskDir:
    task = sandbox.make_task_dir(str(root), "t1", b'{"x":1}', None)
    return task


def test_a_directory_left_as_made_is_recycled_empty(tmp_path: Path) -> None:
    task = used_dir(tmp_path)
    Path(task.output).write_text('{"result": 1}')
    Path(task.state).write_text('[{"op": "set"}]')
    os.chmod(task.output, 0o666)
    os.chmod(task.work, 0o777)
    assert sandbox.recycle_task_dir(task, None)
    assert sandbox.is_untouched(task, None)
    assert not os.path.exists(task.input)
    assert Path(task.output).read_bytes() == b"" and Path(task.state).read_bytes() == b""
    assert oct(os.stat(task.output).st_mode & 0o777) == oct(0o600)
    assert oct(os.stat(task.work).st_mode & 0o777) == oct(0o700)
    sandbox.write_input(task, b"2")
    assert Path(task.input).read_bytes() == b"2"


def test_anything_left_behind_means_a_new_directory(tmp_path: Path) -> None:
    tricks = {
        "a file in work": lambda t: Path(t.work, "left").write_text("secret"),
        "a file in tmp": lambda t: Path(t.tmp, "left").write_text("secret"),
        "an extra entry": lambda t: Path(t.path, "extra").write_text("x"),
        "output is a link": lambda t: (os.unlink(t.output), os.symlink("/etc/passwd", t.output)),
        "state is a fifo": lambda t: (os.unlink(t.state), os.mkfifo(t.state)),
        "output has a second link": lambda t: os.link(t.output, str(tmp_path / "kept")),
        "work is a link": lambda t: (os.rmdir(t.work), os.symlink("/", t.work)),
        "input went missing": lambda t: os.unlink(t.input),
    }
    for n, (name, trick) in enumerate(tricks.items()):
        task = sandbox.make_task_dir(str(tmp_path), f"t{n}", b"1", None)
        trick(task)
        assert not sandbox.recycle_task_dir(task, None), name
        sandbox.remove_task_dir(task)
        assert not os.path.lexists(task.path), name
        (tmp_path / "kept").unlink(missing_ok=True)
    assert os.path.exists("/etc/passwd")


def test_a_directory_made_ahead_and_touched_is_not_used(tmp_path: Path) -> None:
    task = sandbox.make_empty_task_dir(str(tmp_path), "ahead", None)
    assert sandbox.is_untouched(task, None)
    Path(task.output).write_text('"planted"')
    assert not sandbox.is_untouched(task, None)
    other = sandbox.make_empty_task_dir(str(tmp_path), "ahead2", None)
    Path(other.input).write_text("planted")
    assert not sandbox.is_untouched(other, None)
