"""Parsed workflow definitions, once per process (ADR 010).

A definition never changes after submission, so a process parses it (and derives its graph: effective
dependencies, control targets, topological order) the first time it meets the workflow and keeps it
under the workflow id *and* the digest stored next to it: a record re-created under the same id (it
cannot be, ids are random, but a digest costs nothing) never reuses a stale parse.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from flowcore import dag
from flowcore.models import WorkflowDefinition

CACHE_SIZE = 512


@dataclass(frozen=True)
class Shape:
    """The graph of a definition, derived once: what every transition consults."""

    deps: dict[str, frozenset[str]]
    targets: dict[str, frozenset[str]]
    order: list[str]


def shape_of(defn: WorkflowDefinition) -> Shape:
    return Shape(deps=dag.effective_deps(defn), targets=dag.control_targets(defn), order=dag.topological_order(defn))


def digest(definition_json: str) -> str:
    """What the record stores as ``definition_digest``: the first 16 hex digits of the JSON's SHA-256."""
    return hashlib.sha256(definition_json.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Parsed:
    definition: WorkflowDefinition
    shape: Shape


class DefinitionCache:
    """A bounded LRU of parsed definitions keyed by ``(workflow id, digest)``."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], Parsed] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, wf_id: str, key: str) -> Parsed | None:
        entry = self._entries.get((wf_id, key))
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end((wf_id, key))
        return entry

    def put(self, wf_id: str, key: str, raw: str) -> Parsed:
        definition = WorkflowDefinition.model_validate_json(raw)
        entry = Parsed(definition, shape_of(definition))
        self._entries[(wf_id, key)] = entry
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry
