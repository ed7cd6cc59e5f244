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
   ``ModuleNotFoundError`` naming it; likewise a top-level assignment that fails there (a path made
   from ``__file__``) binds its names to placeholders whose use raises ``NameError`` with the reason;
4. one entry function per step: ``def __flow_step_<id>__(ctx): return Class().method(wrap(ctx))``,
   where ``wrap`` turns the agent's context into :class:`agentainer_flow.context.StepContext`.

What runs in the container, and what does not:

* a module that was imported (``from pipelines import Triage``) runs there as it ran on import, with
  a name other than ``__main__``, so ``if __name__ == "__main__":`` blocks are skipped;
* a script (the class's module is ``__main__``) is shipped without the top-level statements that do
  the script's work: bare expressions (``asyncio.run(main())``, ``main()``, ``print(...)``) and any
  statement that starts an event loop (``result = asyncio.run(main())``). Imports, definitions,
  assignments and other statements (a loop that adds steps) stay;
* a class defined inside a function, or in a module whose source cannot be read (a notebook cell),
  is defined again from its own source, with the variables it reads from there: see
  :mod:`agentainer_flow.capture`.

The class must be constructible without arguments. Reading local files at the top level of the
module still happens in the container: keep that inside functions.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from agentainer_flow import capture
from agentainer_flow.errors import ValidationError

ENTRY_PREFIX = "__flow_step_"
# ``<name>.run(...)`` at the top of a script starts its event loop: ``asyncio.run(main())``.
_EVENT_LOOP_RUNNERS = frozenset({"asyncio", "anyio", "trio", "uvloop"})

_STUB = r'''
# ---- agentainer_flow step stub (generated; stdlib only) ------------------------------------------
import sys as _flow_sys
import types as _flow_types

_flow_loaded = [False]


class _FlowPlaceholder(object):
    """Stands for a name this image cannot import. Permissive while the module loads."""

    def __init__(self, name, strict, failure=None):
        object.__setattr__(self, "_flow_name", name)
        object.__setattr__(self, "_flow_strict", strict)
        object.__setattr__(self, "_flow_failure", failure)

    def _flow_check(self):
        if self._flow_strict and _flow_loaded[0]:
            if self._flow_failure is not None:
                raise NameError(
                    "%s is not available in this step's container: its top-level assignment in the workflow"
                    " module failed there with %s" % (self._flow_name, self._flow_failure))
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


def _flow_failed(name, exc):
    return _FlowPlaceholder(name, True, "%s: %s" % (type(exc).__name__, exc))


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
    # The package exports a decorator named like its submodule: `from agentainer_flow import mapreduce`.
    package.mapreduce = _FlowPlaceholder("agentainer_flow.mapreduce", False)
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


def _module_source(cls: type) -> str | None:
    """The source of the class's module; ``None`` when it cannot be read (a notebook, ``python -c``)."""
    module = sys.modules.get(cls.__module__)
    if module is None:
        return None
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return None


def _runs_a_script(node: ast.stmt) -> bool:
    """Whether a top-level statement of a script does the script's work rather than define something:
    a bare expression (``asyncio.run(main())``, ``main()``, ``print(...)``), or any statement that starts
    an event loop (``result = asyncio.run(main())``)."""
    if isinstance(node, ast.Expr):
        return not isinstance(node.value, ast.Constant)  # a docstring stays
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "run":
            owner = sub.func.value
            if isinstance(owner, ast.Name) and owner.id in _EVENT_LOOP_RUNNERS:
                return True
    return False


def _assigned_names(node: ast.stmt) -> list[str]:
    """The names a top-level assignment that may fail in a container binds (``ROOT = Path(__file__)
    .parents[2]``); none for a constant, or when wrapping it in ``try`` would change its text (a
    multi-line string would gain indentation)."""
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    else:
        return []
    if isinstance(value, ast.Constant):
        return []
    names: list[str] = []
    for target in targets:
        parts = target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
        if not all(isinstance(p, ast.Name) for p in parts):
            return []
        names.extend(p.id for p in parts if isinstance(p, ast.Name))
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant | ast.JoinedStr) and sub.lineno != sub.end_lineno:
            return []
    return names


def _rewrite(source: str, *, script: bool = False) -> tuple[list[str], str]:
    """(future import lines, the source without them and with failing top-level imports tolerated).

    With ``script`` (the module ran as ``__main__``), the statements that do the script's work are
    left out (:func:`_runs_a_script`): in a step's container they would run again, on placeholders.
    """
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
        shared = any(s <= end and start <= e for s, e in spans if (s, e) != (start, end))
        if shared or node.col_offset != 0:
            continue
        text = lines[start - 1 : end]
        if script and _runs_a_script(node):
            replace[start] = (end, [f"pass  # not run in a step: {text[0].strip()[:80]}"])
            continue
        names = _assigned_names(node)
        if names:
            failed = [f"    {name} = _flow_failed({name!r}, _flow_exc)" for name in names]
            replace[start] = (end, ["try:", *("    " + t for t in text), "except Exception as _flow_exc:", *failed])
            continue
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
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
    source = _module_source(cls)
    nested = "<locals>" in cls.__qualname__
    futures, body = _rewrite(source, script=cls.__module__ == "__main__") if source is not None else ([], "")
    target, defined_again = cls.__qualname__, ""
    if source is None or nested:
        # Defined in a function (its variables), or in a module we cannot read such as a notebook
        # (its module-level names): the class alone, with what it reads from there bound first.
        namespace: dict[str, Any] = {}
        if source is None:
            module = sys.modules.get(cls.__module__)
            namespace.update(vars(module) if module is not None else {})
        if nested:
            namespace.update(getattr(cls, capture.SCOPE_ATTR, None) or {})
        where = f"the function {cls.__qualname__.split('.<locals>')[0]}()" if nested else f"module {cls.__module__}"
        defined_again = capture.define_class(cls, namespace, module_shipped=source is not None, where=where)
        target = capture.CLASS_NAME
    entries = []
    for step_id, method in steps.items():
        entries.append(
            f"def {entry_name(step_id)}(ctx):\n"
            f"    return {target}().{method}(_FlowStepContext.from_agent(ctx))\n"
        )
    return "\n".join(
        [
            *futures,
            f"_FLOW_CONTEXT_SOURCE = {_context_source()!r}",
            _STUB,
            f"# ---- workflow module {cls.__module__} ----",
            body,
            "",
            defined_again,
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
