"""Regular expressions users write (``matches`` in conditions and event filters), run in linear time.

Python's :mod:`re` backtracks: ``(a+)+$`` against 27 ``a`` and a ``b`` took 4.8 s and doubled with
every character, on the gateway's event loop. Patterns from users are therefore compiled and run
with RE2 (the ``google-re2`` package), whose matching time is linear in the text whatever the
pattern. RE2 refuses what it cannot run in linear time (backreferences such as ``\\1``, lookahead
and lookbehind); such a pattern is refused when it is submitted, with the engine's reason, never at
run time. Patterns are bounded in length, and RE2's memory for a compiled program is capped, so a
pattern cannot exhaust memory either. See ``docs/adr/008-linear-time-regular-expressions.md``.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

MAX_PATTERN_LENGTH = 1000
"""Longest pattern accepted, in characters."""
MAX_PROGRAM_BYTES = 1 << 20
"""RE2's memory budget for one compiled pattern; a pattern that needs more is refused."""


class PatternError(ValueError):
    """A pattern RE2 cannot run, or one too long; the message says why."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the user's mistake, answered 4xx: no stderr noise
    options.max_mem = MAX_PROGRAM_BYTES
    return options


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern; raises :class:`PatternError` naming the problem."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"regular expression is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(
            f"invalid regular expression {pattern!r}: {reason} (patterns run on RE2: no backreferences or lookaround)"
        ) from None


def check(pattern: str) -> str:
    """``pattern`` unchanged when RE2 accepts it; raises :class:`PatternError` otherwise."""
    compile_pattern(pattern)
    return pattern


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text`` (``re.search`` semantics); never raises."""
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        return False  # validation refuses these; a pattern that slipped past it matches nothing
    return compiled.search(text) is not None
