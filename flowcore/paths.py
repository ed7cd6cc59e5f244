"""Dotted paths into the workflow view, and ``{"$path": ...}`` templates in step inputs.

The *view* is the one read model that conditions, map item sources and step inputs share::

    {
        "input": <workflow input>,
        "state": {<key>: <json>, ...},
        "steps": {<step_id>: {"output": ..., "status": "succeeded", "failures": [...]}, ...},
        "item": <the current map item, only inside a map step>,
        "workflow": {"id": ..., "name": ...},
    }

A path follows :func:`flowcore.models.check_path`: ``steps.list.output.files``, ``input.docs.0.name``.
A segment made only of digits indexes a list (``0``, ``12``); there are no negative indexes, because
``-1`` is also a valid dict key and one spelling must not mean two things. On a dict every segment,
digits included, is a key.

A present key whose value is ``null`` counts as found: :func:`exists` is true for it and
:func:`resolve` returns ``None``. Only a key that is absent (or a container that cannot be walked)
makes a path missing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from flowcore.errors import InvalidInput
from flowcore.models import check_path

TEMPLATE_KEY = "$path"
DEFAULT_KEY = "default"

_MISSING: Any = object()


class PathMissing(InvalidInput):
    """A path does not lead to a value in the view.

    ``at_segment`` is the index (in ``path.split(".")``) of the segment that could not be
    followed; ``segment`` is its text and ``parent`` the dotted path that was reached before it.
    """

    code = "path_missing"

    def __init__(
        self, path: str, at_segment: int, *, found: str | None = None, field: str | None = None
    ) -> None:
        segments = path.split(".")
        self.path = path
        self.at_segment = at_segment
        self.segment = segments[at_segment]
        self.parent = ".".join(segments[:at_segment])
        if at_segment == 0:
            detail = f"the view has no {self.segment!r}"
        elif found is None:
            detail = f"{self.segment!r} is missing in {self.parent}"
        else:
            detail = f"{self.segment!r} cannot be read from {self.parent}, which is {found}"
        super().__init__(f"path {path!r} not found: {detail}", field=field)


def _checked(path: str) -> list[str]:
    if not isinstance(path, str):
        raise InvalidInput(f"a path must be a string, got {type(path).__name__}", field="path")
    try:
        check_path(path)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="path") from exc
    return path.split(".")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def resolve(view: Any, path: str) -> Any:
    """Return the value at dotted ``path`` in ``view``.

    Raises :class:`PathMissing` when a key is absent, a list index is out of range or not a
    non-negative integer, or a segment meets a value that is neither a dict nor a list.
    Raises :class:`InvalidInput` when ``path`` does not have the :func:`check_path` syntax.
    The returned value is the view's own object, not a copy.
    """
    segments = _checked(path)
    current = view
    for index, segment in enumerate(segments):
        if isinstance(current, dict):
            if segment not in current:
                raise PathMissing(path, index)
            current = current[segment]
        elif isinstance(current, list):
            if not segment.isdigit() or int(segment) >= len(current):
                raise PathMissing(path, index)
            current = current[int(segment)]
        else:
            raise PathMissing(path, index, found=_type_name(current))
    return current


def exists(view: Any, path: str) -> bool:
    """Whether ``path`` leads to a value in ``view`` (a ``null`` value counts as present)."""
    try:
        resolve(view, path)
    except PathMissing:
        return False
    return True


def is_template(value: Any) -> bool:
    """Whether ``value`` is ``{"$path": ...}`` or ``{"$path": ..., "default": ...}``.

    A dict with any other key is ordinary data, even if it has a ``$path`` key.
    """
    return isinstance(value, dict) and TEMPLATE_KEY in value and set(value) <= {TEMPLATE_KEY, DEFAULT_KEY}


def template_path(template: dict[str, Any]) -> str:
    """The path of a template, checked; :class:`InvalidInput` when it is not a valid path string."""
    path = template[TEMPLATE_KEY]
    if not isinstance(path, str):
        raise InvalidInput(f"'$path' must be a string, got {type(path).__name__}", field="path")
    _checked(path)
    return path


def resolve_templates(value: Any, view: Any) -> Any:
    """Return a deep copy of JSON ``value`` with every template replaced by what its path resolves to.

    ``{"$path": p}`` becomes a copy of ``resolve(view, p)`` (:class:`PathMissing` when absent);
    ``{"$path": p, "default": x}`` becomes a copy of ``x`` when ``p`` is missing. Defaults are
    literal: templates inside them are not resolved. Resolved values are copies too, so the caller
    may mutate the result without touching the view.
    """
    if is_template(value):
        path = template_path(value)
        if DEFAULT_KEY in value:
            found = _resolve_or(view, path, _MISSING)
            return copy.deepcopy(value[DEFAULT_KEY] if found is _MISSING else found)
        return copy.deepcopy(resolve(view, path))
    if isinstance(value, dict):
        return {key: resolve_templates(item, view) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_templates(item, view) for item in value]
    return value


def _resolve_or(view: Any, path: str, default: Any) -> Any:
    try:
        return resolve(view, path)
    except PathMissing:
        return default


def iter_template_paths(value: Any) -> Iterator[str]:
    """Yield the path of every template in JSON ``value``, depth first, in document order.

    Raises :class:`InvalidInput` for a template whose ``$path`` is not a valid path string, so a
    definition can be rejected before it runs.
    """
    if is_template(value):
        yield template_path(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_template_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_template_paths(item)


def step_of_path(path: str) -> str | None:
    """The step id a ``steps.<id>...`` path reads, or ``None`` for other roots and bare ``steps``."""
    segments = path.split(".")
    if segments[0] == "steps" and len(segments) > 1:
        return segments[1]
    return None


def referenced_steps(value: Any) -> set[str]:
    """Ids of the steps that templates in JSON ``value`` read through ``steps.<id>...`` paths."""
    found: set[str] = set()
    for path in iter_template_paths(value):
        step_id = step_of_path(path)
        if step_id is not None:
            found.add(step_id)
    return found
