"""Cross-step validation of a workflow definition, and the graph helpers the engine schedules with.

:mod:`flowcore.models` checks each object on its own; this module checks how the steps fit
together and raises :class:`~flowcore.errors.InvalidInput` with ``field`` set to where the mistake
is, e.g. ``steps[3].depends_on``, and the offending id in the message.

A step waits for more than its ``depends_on``. Its *effective* dependencies also contain

- every branch or decision step that lists it as a target (a target cannot start before the
  choice is made), and
- every step whose result it reads through a ``steps.<id>...`` path: in ``{"$path": ...}``
  templates of its ``input``, in a map step's ``items``, and in
  the conditions of a branch or decision step.

Cycles are searched over these effective dependencies, so reading a step that runs later is
reported the same way as an explicit circular ``depends_on``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from flowcore.conditions import check_patterns, referenced_paths
from flowcore.errors import InvalidInput
from flowcore.models import (
    BranchStep,
    DecisionStep,
    MapStep,
    ParallelStep,
    WaitForEventStep,
    WorkflowDefinition,
)
from flowcore.models import Step as _StepUnion
from flowcore.paths import iter_template_paths, step_of_path
from flowcore.patterns import PatternError

# (step id, id of a step it waits for, field of the definition that makes it wait)
_Edge = tuple[str, str, str]
_AnyStep = _StepUnion


def _path_sources(index: int, step: _AnyStep) -> Iterator[tuple[str, str, list[str]]]:
    """(field, what it is, paths) for every place of a step that reads the view through paths."""
    # A parallel step's static ``inputs`` are not templates: the engine hands each element over as
    # ``item`` unresolved, so only ``input`` is read here.
    yield f"steps[{index}].input", "input", _template_paths(index, step, "input", step.input)
    if isinstance(step, MapStep):
        yield f"steps[{index}].items", "items", [step.items]
    if isinstance(step, WaitForEventStep):  # its filter's templates resolve when the wait begins
        yield f"steps[{index}].filter", "filter", _template_paths(index, step, "filter", step.filter_)
    if isinstance(step, BranchStep):
        yield f"steps[{index}].condition", "condition", referenced_paths(step.condition)
    if isinstance(step, DecisionStep):
        for k, case in enumerate(step.cases):
            yield f"steps[{index}].cases[{k}].condition", "condition", referenced_paths(case.condition)


def _template_paths(index: int, step: _AnyStep, what: str, value: Any) -> list[str]:
    try:
        return list(iter_template_paths(value))
    except InvalidInput as exc:
        raise InvalidInput(f"step {step.id!r} {what}: {exc.message}", field=f"steps[{index}].{what}") from exc


def _target_lists(index: int, step: _AnyStep) -> Iterator[tuple[str, list[str]]]:
    """(field, targets) for each target list of a branch or decision step."""
    if isinstance(step, BranchStep):
        yield f"steps[{index}].then", step.then
        yield f"steps[{index}].else", step.else_
    elif isinstance(step, DecisionStep):
        for k, case in enumerate(step.cases):
            yield f"steps[{index}].cases[{k}].targets", case.targets
        yield f"steps[{index}].default", step.default


def _edges(defn: WorkflowDefinition) -> list[_Edge]:
    edges: list[_Edge] = []
    for index, step in enumerate(defn.steps):
        edges.extend((step.id, dep, f"steps[{index}].depends_on") for dep in step.depends_on)
        for field, _, paths in _path_sources(index, step):
            for path in paths:
                read = step_of_path(path)
                if read is not None:
                    edges.append((step.id, read, field))
        for field, targets in _target_lists(index, step):
            edges.extend((target, step.id, field) for target in targets)
    return edges


def _deps_lists(defn: WorkflowDefinition, edges: list[_Edge]) -> dict[str, list[str]]:
    # Lists, not sets: the cycle search walks them in definition order so its report is stable.
    deps: dict[str, list[str]] = {step.id: [] for step in defn.steps}
    for step_id, dep, _ in edges:
        if step_id in deps and dep not in deps[step_id]:
            deps[step_id].append(dep)
    return deps


def effective_deps(defn: WorkflowDefinition) -> dict[str, frozenset[str]]:
    """For each step (in definition order), every step it must wait for: see the module docstring.

    Meant for a definition that passed :func:`validate`.
    """
    return {step_id: frozenset(deps) for step_id, deps in _deps_lists(defn, _edges(defn)).items()}


def control_targets(defn: WorkflowDefinition) -> dict[str, frozenset[str]]:
    """For each step that some branch or decision targets, the ids of those branch/decision steps."""
    found: dict[str, set[str]] = {}
    for index, step in enumerate(defn.steps):
        for _, targets in _target_lists(index, step):
            for target in targets:
                found.setdefault(target, set()).add(step.id)
    return {target: frozenset(owners) for target, owners in found.items()}


def descendants(deps_map: Mapping[str, frozenset[str] | set[str] | list[str]], step_id: str) -> set[str]:
    """Every step that waits, directly or transitively, for ``step_id`` (itself excluded)."""
    dependents: dict[str, list[str]] = {}
    for sid, deps in deps_map.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(sid)
    return _reach(dependents, step_id)


def ancestors(deps_map: Mapping[str, frozenset[str] | set[str] | list[str]], step_id: str) -> set[str]:
    """Every step that ``step_id`` waits for, directly or transitively (itself excluded)."""
    return _reach(deps_map, step_id)


def _reach(graph: Mapping[str, Any], start: str) -> set[str]:
    seen: set[str] = set()
    queue = deque(graph.get(start, ()))
    while queue:
        node = queue.popleft()
        if node not in seen:
            seen.add(node)
            queue.extend(graph.get(node, ()))
    seen.discard(start)
    return seen


def topological_order(defn: WorkflowDefinition) -> list[str]:
    """Step ids so that each comes after all its effective dependencies.

    Among steps that are ready at the same time, the one defined first comes first. Raises
    :class:`InvalidInput` on a cycle.
    """
    position = {step.id: i for i, step in enumerate(defn.steps)}
    deps = effective_deps(defn)
    waiting = {sid: {d for d in ds if d in position} for sid, ds in deps.items()}
    dependents: dict[str, list[str]] = {sid: [] for sid in deps}
    for sid, ds in waiting.items():
        for dep in ds:
            dependents[dep].append(sid)
    ready = [position[sid] for sid, ds in waiting.items() if not ds]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        sid = defn.steps[heapq.heappop(ready)].id
        order.append(sid)
        for child in dependents[sid]:
            waiting[child].discard(sid)
            if not waiting[child]:
                heapq.heappush(ready, position[child])
    if len(order) < len(position):
        _raise_on_cycle(defn, _edges(defn))
        raise InvalidInput("the steps' dependencies form a cycle", field="steps")  # pragma: no cover
    return order


def check_runnable(defn: WorkflowDefinition) -> None:
    """Refuse to start (or to put a trigger on) a definition without steps: its run would do nothing
    and be reported completed, which is almost always a mistake (YAML indentation that dropped the
    steps). Creating one without starting it stays allowed: a workflow that only holds state, as in
    the client API's ``create_workflow(name=...)``. Checked where runs start, so that records stored
    before the rule still load."""
    if not defn.steps:
        raise InvalidInput(
            "a workflow needs at least one step to run; this one has none (it can be created without"
            " ?start=true, to hold state)",
            field="steps",
        )


def validate(defn: WorkflowDefinition) -> None:
    """Check how the steps of ``defn`` fit together; raise :class:`InvalidInput` at the first mistake.

    Rejected: duplicate step ids; ``depends_on`` naming a missing step or the step itself; branch
    and decision targets that are missing, the branch itself, or something it waits for; a step in
    both ``then`` and ``else``; ``steps.<id>`` paths (input templates, map items, conditions) naming
    a missing step or the reading step itself, and a bare ``steps`` path; ``item`` paths outside the
    input of a map or parallel step; ``matches`` patterns that RE2 cannot run (:mod:`flowcore.patterns`);
    and any cycle of effective dependencies. A step may be a target of several
    decision cases, and of several branch or decision steps. A definition without steps passes
    (a workflow created to hold state); starting it does not (:func:`check_runnable`).
    """
    ids: dict[str, int] = {}
    for index, step in enumerate(defn.steps):
        if step.id in ids:
            raise InvalidInput(
                f"duplicate step id {step.id!r} (also steps[{ids[step.id]}])", field=f"steps[{index}].id"
            )
        ids[step.id] = index
    for index, step in enumerate(defn.steps):
        _check_depends_on(index, step, ids)
        _check_paths(index, step, ids)
        _check_targets(index, step, ids)
        _check_patterns(index, step)
    edges = _edges(defn)
    _check_target_not_ancestor(defn, edges)
    _raise_on_cycle(defn, edges)


def _check_depends_on(index: int, step: _AnyStep, ids: Mapping[str, int]) -> None:
    field = f"steps[{index}].depends_on"
    for dep in step.depends_on:
        if dep == step.id:
            raise InvalidInput(f"step {step.id!r} depends on itself", field=field)
        if dep not in ids:
            raise InvalidInput(f"step {step.id!r} depends on unknown step {dep!r}", field=field)


def _check_paths(index: int, step: _AnyStep, ids: Mapping[str, int]) -> None:
    for field, what, paths in _path_sources(index, step):
        for path in paths:
            root = path.split(".", 1)[0]
            if root == "item" and not (isinstance(step, MapStep | ParallelStep) and what == "input"):
                raise InvalidInput(
                    f"step {step.id!r} {what} reads {path!r}, "
                    "but 'item' only exists in the input of a map or parallel step",
                    field=field,
                )
            if root != "steps":
                continue
            read = step_of_path(path)
            if read is None:
                raise InvalidInput(
                    f"step {step.id!r} {what} reads {path!r}: name a step, as in 'steps.<id>.output'",
                    field=field,
                )
            if read == step.id:
                raise InvalidInput(
                    f"step {step.id!r} {what} reads its own result through {path!r}", field=field
                )
            if read not in ids:
                raise InvalidInput(
                    f"step {step.id!r} {what} reads unknown step {read!r} through {path!r}", field=field
                )


def _check_patterns(index: int, step: _AnyStep) -> None:
    conditions = []
    if isinstance(step, BranchStep):
        conditions.append((f"steps[{index}].condition", step.condition))
    if isinstance(step, DecisionStep):
        conditions.extend((f"steps[{index}].cases[{k}].condition", case.condition) for k, case in enumerate(step.cases))
    for field, condition in conditions:
        try:
            check_patterns(condition)
        except PatternError as exc:
            raise InvalidInput(f"step {step.id!r} condition: {exc}", field=field) from None


def _check_targets(index: int, step: _AnyStep, ids: Mapping[str, int]) -> None:
    kind = "branch" if isinstance(step, BranchStep) else "decision"
    for field, targets in _target_lists(index, step):
        for target in targets:
            if target == step.id:
                raise InvalidInput(f"{kind} {step.id!r} targets itself", field=field)
            if target not in ids:
                raise InvalidInput(f"{kind} {step.id!r} targets unknown step {target!r}", field=field)
    if isinstance(step, BranchStep):
        for target in step.else_:
            if target in step.then:
                raise InvalidInput(
                    f"step {target!r} is in both 'then' and 'else' of branch {step.id!r}",
                    field=f"steps[{index}].else",
                )


def _check_target_not_ancestor(defn: WorkflowDefinition, edges: list[_Edge]) -> None:
    # A route from the branch to its target never uses the implicit target -> branch edge (it
    # leaves the target, where the route ends), so the full edge set shows the user's own chain.
    deps = _deps_lists(defn, edges)
    for index, step in enumerate(defn.steps):
        kind = "branch" if isinstance(step, BranchStep) else "decision"
        for field, targets in _target_lists(index, step):
            for target in targets:
                route = _route(deps, step.id, target)
                if route is not None:
                    raise InvalidInput(
                        f"{kind} {step.id!r} targets {target!r}, which {step.id!r} itself waits for "
                        f"({' -> '.join(route)}; each step depends on the next)",
                        field=field,
                    )


def _route(deps: Mapping[str, list[str]], start: str, goal: str) -> list[str] | None:
    """The shortest chain start -> ... -> goal following dependencies, or None."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for dep in deps.get(node, ()):
            if dep in previous or dep == start:
                continue
            previous[dep] = node
            if dep == goal:
                chain = [goal]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return chain[::-1]
            queue.append(dep)
    return None


def _raise_on_cycle(defn: WorkflowDefinition, edges: list[_Edge]) -> None:
    deps = _deps_lists(defn, edges)
    origin: dict[tuple[str, str], str] = {}
    for sid, dep, field in edges:
        origin.setdefault((sid, dep), field)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in deps:
        if root in state:
            continue
        path = [root]
        iters = [iter(deps[root])]
        state[root] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif nxt not in deps or state.get(nxt) == 2:
                continue
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                first = min(range(len(cycle)), key=lambda i: _position(defn, cycle[i]))
                cycle = cycle[first:] + cycle[:first]
                shown = " -> ".join([*cycle, cycle[0]])
                field = origin[(cycle[0], cycle[1 % len(cycle)])]
                raise InvalidInput(f"dependency cycle: {shown} (each step depends on the next)", field=field)
            else:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(deps[nxt]))


def _position(defn: WorkflowDefinition, step_id: str) -> int:
    for i, step in enumerate(defn.steps):
        if step.id == step_id:
            return i
    return len(defn.steps)


_EDGE_RANK = {"control": 0, "dep": 1, "data": 2}


def _edge_kind(field: str) -> tuple[str, str]:
    """(kind, label) of an edge from the definition field that makes it: see :func:`graph_edges`."""
    tail = field.rsplit(".", 1)[-1]
    if tail == "depends_on":
        return "dep", ""
    if tail in ("then", "else", "default"):
        return "control", tail
    if tail == "targets":  # steps[i].cases[k].targets
        case = field.rsplit(".", 1)[0].rsplit("[", 1)[-1].rstrip("]")
        return "control", f"case {int(case) + 1}"
    return "data", tail  # input, items, condition


def graph_edges(defn: WorkflowDefinition) -> list[dict[str, str]]:
    """The edges the engine schedules by (:func:`effective_deps`), for drawing: one per pair of steps.

    Each is ``{"from", "to", "kind", "label"}``: ``to`` waits for ``from``. ``kind`` is ``control``
    (``from`` is a branch or decision that chooses ``to``; label ``then``, ``else``, ``case N`` or
    ``default``), ``dep`` (``depends_on``) or ``data`` (``to`` reads ``from``'s result through a path in
    its ``input``, ``items`` or ``condition``, the label). When several fields join the same pair, the
    first of control, dep, data names it. In definition order of ``to``, then of discovery.
    """
    best: dict[tuple[str, str], dict[str, str]] = {}
    for step_id, dep, field in _edges(defn):
        kind, label = _edge_kind(field)
        key = (dep, step_id)
        known = best.get(key)
        if known is None or _EDGE_RANK[kind] < _EDGE_RANK[known["kind"]]:
            best[key] = {"from": dep, "to": step_id, "kind": kind, "label": label}
    position = {step.id: i for i, step in enumerate(defn.steps)}
    return sorted(best.values(), key=lambda e: position.get(e["to"], len(position)))
