"""BENCHMARKS.md is written by more than one command: ``make bench`` writes the main part and
``make loadtest`` its own section. Each section sits between markers so one command replaces its
part and keeps the others."""

from __future__ import annotations

import re
from pathlib import Path


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section:{name} -->", f"<!-- /section:{name} -->"


def sections(text: str) -> dict[str, str]:
    """Every marked section of ``text``, markers included, by name."""
    found = re.finditer(r"<!-- section:([a-z0-9-]+) -->.*?<!-- /section:\1 -->", text, flags=re.S)
    return {m.group(1): m.group(0) for m in found}


def upsert(path: Path, name: str, body: str) -> None:
    """Replace section ``name`` of ``path`` with ``body`` (append it when absent)."""
    begin, end = _markers(name)
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    current = sections(text).get(name)
    text = text.replace(current, block) if current else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def keep_others(old: str, new: str) -> str:
    """``new`` followed by the sections of ``old`` that ``new`` does not have."""
    have = sections(new)
    extra = [block for name, block in sections(old).items() if name not in have]
    return new.rstrip() + ("\n\n" + "\n\n".join(extra) + "\n" if extra else "\n")
