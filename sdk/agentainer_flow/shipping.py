"""The self-contained module a Python-function step ships to its container.

Step containers have python3 and its standard library, nothing else: not this package, not httpx,
not pydantic. The definition carries the generated source once, in its ``modules`` table, and each
step's ``function`` refers to it (``{"module", "qualname", "source_ref"}``, see :func:`ship`); the
pool's agent gets ``{"module", "qualname", "source"}`` with each task, imports the module from that
source and calls ``qualname(ctx)``. The generated source is:

1. the ``from __future__`` imports of the user's module (they must come first);
2. a stdlib-only stub: when ``agentainer_flow`` cannot be imported it registers a stand-in package in
   ``sys.modules`` whose decorators return what they decorate, whose exception classes are real
   exceptions, whose other names are permissive placeholders, and which carries the real
   :mod:`agentainer_flow.context` (its source is embedded);
3. the user's module source (``inspect.getsource`` of the class's module), with each top-level
   ``import`` that fails in the image bound to a placeholder instead: module-level decorators and
   annotations from packages the image lacks keep working, and using such a name inside a step raises
   ``ModuleNotFoundError`` naming it;
4. one entry function per step: ``def __flow_step_<id>__(ctx): return Class().method(wrap(ctx))``,
   where ``wrap`` turns the agent's context into :class:`agentainer_flow.context.StepContext`.

Rules for the user's module: the class is at module level and constructible without arguments; code
that must not run in the container (``asyncio.run(main())``, reading local files) sits under
``if __name__ == "__main__":`` or inside functions.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from agentainer_flow.errors import ValidationError

ENTRY_PREFIX = "__flow_step_"

_STUB = r'''
# ---- agentainer_flow step stub (generated; stdlib only) ------------------------------------------
import sys as _flow_sys
import types as _flow_types

_flow_loaded = [False]


class _FlowPlaceholder(object):
    """Stands for a name this image cannot import. Permissive while the module loads."""

    def __init__(self, name, strict):
        object.__setattr__(self, "_flow_name", name)
        object.__setattr__(self, "_flow_strict", strict)

    def _flow_check(self):
        if self._flow_strict and _flow_loaded[0]:
            raise ModuleNotFoundError(
                "%s is not available in this step's image (imported at the top of the workflow module)"
                % self._flow_name)

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and (isinstance(args[0], type) or callable(args[0])):
            return args[0]
        self._flow_check()
        return _FlowPlaceholder(self._flow_name + "(...)", self._flow_strict)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        self._flow_check()
        return _FlowPlaceholder(self._flow_name + "." + attr, self._flow_strict)

    def __getitem__(self, key):
        self._flow_check()
        return _FlowPlaceholder(self._flow_name + "[...]", self._flow_strict)

    def __iter__(self):
        self._flow_check()
        return iter(())

    def __mro_entries__(self, bases):
        return ()  # `class Settings(BaseModel)` with BaseModel missing: a plain class

    def __repr__(self):
        return "<unavailable %s>" % self._flow_name


def _flow_missing(name):
    return _FlowPlaceholder(name, True)


def _flow_install_stub():
    for _name in [n for n in _flow_sys.modules if n == "agentainer_flow" or n.startswith("agentainer_flow.")]:
        del _flow_sys.modules[_name]
    package = _flow_types.ModuleType("agentainer_flow")
    package.__path__ = []
    context = _flow_types.ModuleType("agentainer_flow.context")
    exec(compile(_FLOW_CONTEXT_SOURCE, "agentainer_flow/context.py", "exec"), context.__dict__)
    errors = _flow_types.ModuleType("agentainer_flow.errors")

    class AgentainerError(Exception):
        pass

    class ClientError(AgentainerError):
        pass

    class ValidationError(ClientError):
        pass

    class TransportError(AgentainerError, ConnectionError):
        pass

    class WorkflowError(AgentainerError):
        pass

    class WorkflowTimeoutError(AgentainerError, TimeoutError):
        pass

    names = dict(AgentainerError=AgentainerError, ClientError=ClientError, ValidationError=ValidationError,
                 TransportError=TransportError, WorkflowError=WorkflowError,
                 WorkflowTimeoutError=WorkflowTimeoutError, StepContext=context.StepContext,
                 MemoryState=context.MemoryState, WorkflowState=context.WorkflowState)

    def _getattr(name, _prefix="agentainer_flow"):
        if name.startswith("__"):
            raise AttributeError(name)
        return _FlowPlaceholder(_prefix + "." + name, False)

    for sub in ("client", "models", "decorators", "branching", "definition", "mapreduce", "local",
                "execution", "shipping", "cli", "metrics", "agents", "triggers"):
        module = _flow_types.ModuleType("agentainer_flow." + sub)
        module.__getattr__ = _getattr
        _flow_sys.modules[module.__name__] = module
        setattr(package, sub, module)
    for module in (package, errors):
        module.__dict__.update(names)
        module.__getattr__ = _getattr
    package.context = context
    package.errors = errors
    _flow_sys.modules["agentainer_flow"] = package
    _flow_sys.modules["agentainer_flow.context"] = context
    _flow_sys.modules["agentainer_flow.errors"] = errors


try:
    from agentainer_flow.context import StepContext as _FlowStepContext
except Exception:
    _flow_install_stub()
    from agentainer_flow.context import StepContext as _FlowStepContext
# ---- end of stub -----------------------------------------------------------------------------------
'''


@functools.cache
def _context_source() -> str:
    return (Path(__file__).parent / "context.py").read_text()


def module_name_for(cls: type) -> str:
    """The name the step module gets in the container (never ``__main__``: the agent is that)."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", f"{cls.__module__}_{cls.__qualname__}")
    return f"flowstep_{base}".lower()[:120]


def entry_name(step_id: str) -> str:
    return f"{ENTRY_PREFIX}{re.sub(r'[^A-Za-z0-9_]', '_', step_id)}__"


def _module_source(cls: type) -> str:
    if "<locals>" in cls.__qualname__:
        raise ValidationError(
            f"{cls.__qualname__} is defined inside a function: Python-function steps need the workflow class "
            "at module level (or give each step a command=)"
        )
    module = sys.modules.get(cls.__module__)
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError) as exc:
        raise ValidationError(
            f"cannot read the source of module {cls.__module__!r} to ship {cls.__qualname__}'s steps: {exc}"
        ) from exc


def _rewrite(source: str) -> tuple[list[str], str]:
    """(future import lines, the source without them and with failing top-level imports tolerated)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:  # the module runs here, so this is rare (e.g. an encoding mismatch)
        raise ValidationError(f"cannot parse the workflow module: {exc}") from exc
    lines = source.splitlines()
    spans: list[tuple[int, int]] = []
    for node in tree.body:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        spans.append((start, node.end_lineno or node.lineno))
    futures: list[str] = []
    replace: dict[int, tuple[int, list[str]]] = {}
    for node, (start, end) in zip(tree.body, spans, strict=True):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        shared = any(s <= end and start <= e for s, e in spans if (s, e) != (start, end))
        if shared or node.col_offset != 0:
            continue
        text = lines[start - 1 : end]
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            futures.extend(text)
            replace[start] = (end, [])
            continue
        bindings: list[str] = []
        for alias in node.names:
            if alias.name == "*":
                bindings = []
                break
            if isinstance(node, ast.Import):
                bound = alias.asname or alias.name.split(".")[0]
                target = alias.name if alias.asname else alias.name.split(".")[0]
            else:
                bound = alias.asname or alias.name
                target = f"{'.' * node.level}{node.module or ''}.{alias.name}"
            bindings.append(f"    {bound} = _flow_missing({target!r})")
        if not bindings:
            continue
        replace[start] = (end, ["try:", *("    " + t for t in text), "except ImportError:", *bindings])
    out: list[str] = []
    i = 1
    while i <= len(lines):
        if i in replace:
            end, new = replace[i]
            out.extend(new)
            i = end + 1
        else:
            out.append(lines[i - 1])
            i += 1
    return futures, "\n".join(out)


def generate_source(cls: type, steps: dict[str, str]) -> str:
    """The module shipped for ``cls``: ``steps`` maps step ids to the method names they call."""
    futures, body = _rewrite(_module_source(cls))
    entries = []
    for step_id, method in steps.items():
        entries.append(
            f"def {entry_name(step_id)}(ctx):\n"
            f"    return {cls.__qualname__}().{method}(_FlowStepContext.from_agent(ctx))\n"
        )
    return "\n".join(
        [
            *futures,
            f"_FLOW_CONTEXT_SOURCE = {_context_source()!r}",
            _STUB,
            f"# ---- workflow module {cls.__module__} ----",
            body,
            "",
            "# ---- entry points (generated) ----",
            "_flow_loaded[0] = True",
            *entries,
        ]
    )


def ship(cls: type, steps: dict[str, str]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The definition's ``modules`` table and, per step id, its ``function`` field.

    The class's module is generated once and shipped once, under its module name; every step refers
    to it (``{"module", "qualname", "source_ref"}``), so a definition's size grows by a few dozen bytes
    per step instead of by the whole module.
    """
    if not steps:
        return {}, {}
    module = module_name_for(cls)
    refs = {sid: {"module": module, "qualname": entry_name(sid), "source_ref": module} for sid in steps}
    return {module: generate_source(cls, steps)}, refs
