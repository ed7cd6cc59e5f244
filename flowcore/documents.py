"""Bounded parsing of the JSON and YAML documents users send.

One input must never stall or exhaust a process (``SECURITY.md``), and a document can do both while
staying small on the wire:

Aliases
    A YAML alias repeats a whole anchored node; nine lines of aliases of aliases ("billion laughs")
    describe 10^9 values in 433 bytes. PyYAML shares the repeated objects, so loading is quick, but
    whatever walks the result afterwards (validation, ``json.dumps``, Redis) sees every copy.
    Aliases stay allowed (``<<: *defaults`` is common in workflow files); what is bounded is the
    number of values the document holds *with every alias expanded*: :attr:`DocumentLimits.max_nodes`.
Depth
    Parsers, validators and serialisers recurse; JSON nested 1,000 levels deep raised
    :class:`RecursionError` (a 500). Documents deeper than :attr:`DocumentLimits.max_depth` are refused.
Cost
    YAML is read with libyaml (``yaml.CSafeLoader``, ~6x faster than the pure-Python loader) when
    PyYAML was built with it. The YAML bounds are checked on the parser's event stream before
    anything is built: one linear pass that never recurses and never expands an alias.

Every refusal raises :class:`~flowcore.errors.DocumentTooComplex` (or
:class:`~flowcore.errors.MalformedBody` for a document that does not parse) naming the limit. The
functions here are pure and synchronous; the gateway runs large documents in a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from flowcore.errors import DocumentTooComplex, MalformedBody

# libyaml: the same safe constructor over a C scanner and parser, when PyYAML was built with it.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_NODES = 200_000


@dataclass(frozen=True)
class DocumentLimits:
    max_depth: int = DEFAULT_MAX_DEPTH
    """Deepest nesting of lists and objects (the top-level value is depth 1)."""
    max_nodes: int = DEFAULT_MAX_NODES
    """Values (scalars, lists, objects) in the document, every YAML alias counted as a full copy."""


def _too_deep(kind: str, limits: DocumentLimits) -> DocumentTooComplex:
    return DocumentTooComplex(
        f"{kind} document nests deeper than {limits.max_depth} levels", field="body",
        details={"limit": "max_document_depth", "value": limits.max_depth},
    )


def _too_many(kind: str, count: int, limits: DocumentLimits) -> DocumentTooComplex:
    extra = " with its aliases expanded" if kind == "YAML" else ""
    return DocumentTooComplex(
        f"{kind} document holds more than {limits.max_nodes} values{extra} (at least {count})", field="body",
        details={"limit": "max_document_nodes", "value": limits.max_nodes},
    )


def check_value(value: Any, limits: DocumentLimits, kind: str = "JSON") -> None:
    """Raise :class:`DocumentTooComplex` when a parsed value is too deep or too large; never recurses."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > limits.max_nodes:
            raise _too_many(kind, count, limits)
        if isinstance(item, dict | list):
            if depth > limits.max_depth:
                raise _too_deep(kind, limits)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def load_json(raw: bytes | str, limits: DocumentLimits) -> Any:
    """Parse JSON within ``limits``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise MalformedBody("request body is not UTF-8") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except RecursionError:  # deeper than the interpreter's stack: certainly deeper than the limit
        raise _too_deep("JSON", limits) from None
    check_value(value, limits)
    return value


def _yaml_error(exc: yaml.YAMLError) -> MalformedBody:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return MalformedBody(f"malformed YAML{where}: {getattr(exc, 'problem', None) or exc}")


def check_yaml(raw: bytes | str, limits: DocumentLimits) -> None:
    """Walk the YAML event stream once: refuse too deep a nesting or too many values once expanded.

    Each collection's expanded size is summed as its events go by; an anchor remembers the size of
    the node it names, so an alias costs that size without being expanded.
    """
    loader = _Loader(raw)
    try:
        sizes: dict[str, int] = {}  # anchor -> values in the node it names, expanded
        open_nodes: list[tuple[str | None, int]] = []  # (anchor, `expanded` when it opened)
        expanded = 0
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                open_nodes.append((event.anchor, expanded))
                if len(open_nodes) > limits.max_depth:
                    raise _too_deep("YAML", limits)
                expanded += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, start = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = expanded - start
            elif isinstance(event, yaml.ScalarEvent):
                expanded += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                if any(anchor == event.anchor for anchor, _ in open_nodes):
                    # PyYAML would build a list that contains itself; nothing downstream could walk it.
                    raise MalformedBody(f"malformed YAML: alias *{event.anchor} refers to a node that contains it")
                expanded += sizes.get(event.anchor or "", 1)  # an unknown anchor fails when the document is built
            if expanded > limits.max_nodes:
                raise _too_many("YAML", expanded, limits)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's own cap (1,000 levels)
            raise _too_deep("YAML", limits) from None
        raise _yaml_error(exc) from exc
    finally:
        loader.dispose()


def load_yaml(raw: bytes | str, limits: DocumentLimits) -> Any:
    """Parse one YAML document within ``limits`` with the safe constructor."""
    check_yaml(raw, limits)
    loader = _Loader(raw)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from exc
    except RecursionError:  # pragma: no cover - the depth check runs first
        raise _too_deep("YAML", limits) from None
    finally:
        loader.dispose()
