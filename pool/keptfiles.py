"""Files copied out of a kept container: the one place their archive is parsed and bounded (ADR 009).

``tar`` runs inside the kept container (:meth:`pool.kept.Keeper.copy`), so it can only ever read the
container's own filesystem: a symlink a hostile step left there resolves inside the container, and
tar archives the link, not its target. What comes back is data from inside a container, capped at
``kept_copy_max_bytes`` while it is read. :func:`repack` then parses it in memory and builds a new
archive of the regular files and directories only, with normalised relative names: links, hard
links, devices and FIFOs are dropped (counted in ``skipped``), so a client that extracts the answer
cannot be led outside its destination either.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass, field

from pool.errors import CopyTooLarge


@dataclass
class Packed:
    data: bytes
    files: int = 0
    dirs: int = 0
    skipped: list[str] = field(default_factory=list)


def _safe_name(name: str) -> str | None:
    """A member name as a clean relative path, or None when it could point elsewhere."""
    if not name or "\x00" in name:
        return None
    normal = posixpath.normpath(name.lstrip("/"))
    if normal in (".", "") or normal.startswith("..") or "/../" in f"/{normal}/":
        return None
    return normal


def repack(raw: bytes, *, truncated: bool, max_bytes: int) -> Packed:
    """The safe archive of ``raw`` (a tar from inside a container); CopyTooLarge past ``max_bytes``."""
    if truncated:
        raise CopyTooLarge(
            f"the files asked for are larger than {max_bytes} bytes (kept_copy_max_bytes): copy a smaller path"
        )
    out = io.BytesIO()
    packed = Packed(b"")
    total = 0
    try:
        source = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError:
        return Packed(_empty())
    with source, tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as sink:
        while True:
            try:
                member = source.next()
            except tarfile.TarError:
                break  # a cut or corrupt archive: what was read so far
            if member is None:
                break
            name = _safe_name(member.name)
            if name is None or not (member.isreg() or member.isdir()):
                packed.skipped.append(member.name[:200])
                continue
            clean = tarfile.TarInfo(name)
            clean.mode = member.mode & 0o755
            clean.mtime = member.mtime
            if member.isdir():
                clean.type = tarfile.DIRTYPE
                sink.addfile(clean)
                packed.dirs += 1
                continue
            total += member.size
            if total > max_bytes:
                raise CopyTooLarge(f"the files asked for are larger than {max_bytes} bytes (kept_copy_max_bytes)")
            handle = source.extractfile(member)
            content = handle.read(member.size) if handle is not None else b""
            clean.size = len(content)
            sink.addfile(clean, io.BytesIO(content))
            packed.files += 1
    packed.data = out.getvalue()
    return packed


def _empty() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:"):
        pass
    return out.getvalue()
