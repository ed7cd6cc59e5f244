"""The one rule every id follows: workflow, step, trigger, event and delivery ids, and state keys in URLs.

An id is 1 to :data:`MAX_ID_LENGTH` characters of ``A-Z a-z 0-9 _ -``, starting with a letter or a
digit. Ids become parts of Redis keys (``{p}:wf:{id}:state``) and of URL paths, so a ``:`` could
make one key look like another's, and ``/``, ``.`` or ``%`` could step out of a path; none of them
is allowed. The ids the server makes (``wf-…``, ``tr-…``, uuid hex) and step ids
(:data:`flowcore.models.STEP_ID_PATTERN`, at most 64 characters) all follow it.
"""

from __future__ import annotations

import re

from flowcore.errors import InvalidInput

MAX_ID_LENGTH = 128
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_ID_LENGTH - 1}}}$"
_ID = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def check_id(value: str, field: str) -> str:
    """``value`` unchanged when it is a valid id; :class:`InvalidInput` (422) naming ``field`` otherwise."""
    if not is_valid_id(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidInput(
            f"invalid {field} {shown!r}: an id is 1 to {MAX_ID_LENGTH} letters, digits, '_' or '-', "
            "starting with a letter or digit",
            field=field,
        )
    return value
