"""Shipping a workflow class that is not at the top level of a readable module.

Two cases reach here from :mod:`agentainer_flow.shipping`:

* a class defined **inside a function** (a pytest test, a ``main()``): its module is shipped as usual,
  and the class's own source is executed again in a copy of the module's namespace, after binding
  there the enclosing function's variables the class reads. The class sees the values it saw where
  it was defined, and the module's own names are left as they are;
* a class in a module whose source cannot be read (a **notebook cell**, ``python -c``): the class's
  own source is shipped the same way, with the module-level names it reads bound first.

A variable can be shipped when it is a JSON-like literal (numbers, strings, ``None``, lists, tuples,
dicts and sets of them), a module (``import numpy as np``), or a class or function at the top level
of an importable module. Anything else (an open client, a local helper function) cannot cross into
the container: :func:`define_class` raises :class:`ValidationError` naming it and the fix.

The values are those of the enclosing function when ``@workflow`` ran: :func:`remember_scope` keeps
them on the class (as pydantic does to resolve the annotations of models defined in functions).
"""

from __future__ import annotations

import ast
import builtins
import inspect
import symtable
import sys
import textwrap
import types
from collections.abc import Mapping
from typing import Any

from agentainer_flow.errors import ValidationError

SCOPE_ATTR = "__flow_scope__"
CLASS_FACTORY = "__flow_define_class__"
CLASS_NAME = "__flow_class__"
_LITERALS = (type(None), bool, int, float, complex, str, bytes)


def remember_scope(cls: type) -> None:
    """Keep the variables of the function that defines ``cls`` (called by ``@workflow``)."""
    if "<locals>" not in cls.__qualname__:
        return
    frame = sys._getframe(1)
    # Skip this package's own frames (``@mapreduce`` applies ``@workflow`` itself).
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("agentainer_flow"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is not None:
        setattr(cls, SCOPE_ATTR, dict(frame.f_locals))


def class_source(cls: type) -> str:
    """The source of ``cls`` alone (its decorators included), dedented."""
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError) as exc:
        raise ValidationError(
            f"cannot read the source of {cls.__qualname__} to ship its steps ({exc}): define the workflow class"
            " in a .py file, or give each step a command="
        ) from exc


def names_read(source: str) -> set[str]:
    """The names a class statement reads from outside itself (its enclosing scopes or globals)."""
    table = symtable.symtable(source, "<workflow class>", "exec")
    found: set[str] = set()

    def walk(scope: symtable.SymbolTable, top: bool) -> None:
        for sym in scope.get_symbols():
            if not sym.is_referenced():
                continue
            if (top and not sym.is_assigned() and not sym.is_imported()) or (not top and sym.is_global()):
                found.add(sym.get_name())
        for child in scope.get_children():
            walk(child, False)

    walk(table, True)
    return found


def _is_literal(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if isinstance(value, _LITERALS):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return all(_is_literal(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_is_literal(k, depth + 1) and _is_literal(v, depth + 1) for k, v in value.items())
    return False


def _import(statement: str, name: str, target: str) -> list[str]:
    return ["try:", f"    {statement}", "except ImportError:", f"    {name} = _flow_missing({target!r})"]


def binding(name: str, value: Any, home: str, module_shipped: bool) -> list[str] | None:
    """Lines that bind ``name`` to ``value`` in the step's module; ``None`` if it cannot be shipped.

    ``home`` is the workflow class's module; ``module_shipped`` says whether its source is in the
    step's module (so its top-level names can be referred to).
    """
    if _is_literal(value):
        text = repr(value)
        try:
            if ast.literal_eval(text) == value:
                return [f"{name} = {text}"]
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
        return None
    if isinstance(value, types.ModuleType):
        return _import(f"import {value.__name__} as {name}", name, value.__name__)
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "." in qualname or "<" in qualname:
        return None
    if module == home:
        return [f"{name} = {qualname}"] if module_shipped else None
    if module == "__main__":
        return None
    return _import(f"from {module} import {qualname} as {name}", name, f"{module}.{qualname}")


def define_class(cls: type, namespace: Mapping[str, Any], *, module_shipped: bool, where: str) -> str:
    """Source that defines ``cls`` again as ``__flow_class__``, with the names it reads from
    ``namespace`` bound first. ``where`` names the scope for error messages."""
    source = class_source(cls)
    lines: list[str] = []
    refused: list[str] = []
    for name in sorted(names_read(source) - {cls.__name__}):
        if name not in namespace:
            continue  # a module-level name, a builtin, or a NameError the step will report as usual
        if not module_shipped and hasattr(builtins, name) and namespace[name] is getattr(builtins, name):
            continue
        bound = binding(name, namespace[name], cls.__module__, module_shipped)
        if bound is None:
            refused.append(f"{name!r} ({type(namespace[name]).__name__})")
        else:
            lines.extend(bound)
    if refused:
        raise ValidationError(
            f"{cls.__qualname__} reads {', '.join(refused)} from {where}, which cannot be shipped to its steps'"
            " containers (only literals, modules and top-level classes or functions of importable modules can):"
            " define it at module level, or create it inside the step"
        )
    # Executed in a copy of the module's namespace, not pasted into a function: re-indenting the
    # class would change its multi-line strings. Registered in linecache for tracebacks.
    code = "\n".join([*lines, source])
    filename = f"<workflow class {cls.__qualname__}>"
    return (
        f"def {CLASS_FACTORY}():\n"
        "    import linecache\n"
        f"    code = {code!r}\n"
        f"    linecache.cache[{filename!r}] = (len(code), None, code.splitlines(True), {filename!r})\n"
        "    namespace = dict(globals())\n"
        f"    exec(compile(code, {filename!r}, 'exec'), namespace)\n"
        f"    return namespace[{cls.__name__!r}]\n"
        "\n\n"
        f"{CLASS_NAME} = {CLASS_FACTORY}()\n"
    )
