"""Reading request bodies: JSON or YAML in, pydantic models out, clear 4xx on anything else.

Bodies are bounded three ways: their size (:class:`gateway.middleware.BodyLimit`, 413), and their
nesting depth and number of values, YAML aliases expanded (:mod:`flowcore.documents`, 413). Bodies of
``parse_in_thread_bytes`` or more are parsed in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

from typing import Any, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from flowcore.documents import DocumentLimits, load_json, load_yaml
from flowcore.errors import InvalidInput, MalformedBody

M = TypeVar("M", bound=BaseModel)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


async def read_document(request: Request, *, allow_yaml: bool = True, required: bool = True) -> Any:
    """The body as a JSON value. YAML is accepted when the content type says so."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise MalformedBody("request body is empty; send a JSON document")
        return None
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    load = load_yaml if allow_yaml and ctype in YAML_TYPES else load_json
    return await parse_bounded(request, raw, load)


def document_limits(request: Request) -> DocumentLimits:
    settings = getattr(request.app.state, "settings", None)
    if settings is None:
        return DocumentLimits()
    return DocumentLimits(max_depth=settings.max_document_depth, max_nodes=settings.max_document_nodes)


async def parse_bounded(request: Request, raw: bytes, load: Any) -> Any:
    """``load(raw, limits)`` within this gateway's limits; in a worker thread when ``raw`` is large."""
    limits = document_limits(request)
    settings = getattr(request.app.state, "settings", None)
    threshold: int = settings.parse_in_thread_bytes if settings is not None else 32_768
    if len(raw) < threshold:
        return load(raw, limits)
    return await anyio.to_thread.run_sync(load, raw, limits)


async def read_model(request: Request, model: type[M], *, allow_yaml: bool = False) -> M:
    document = await read_document(request, allow_yaml=allow_yaml)
    return parse_model(document, model)


def parse_model(document: Any, model: type[M]) -> M:
    if not isinstance(document, dict):
        raise InvalidInput(f"the body must be a JSON object, got {type(document).__name__}")
    try:
        return model.model_validate(document)
    except ValidationError:
        raise  # answered 422 with the field paths by gateway.errors


def query_int(request: Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be an integer, got {raw!r}", field=name) from None
    if not lo <= value <= hi:
        raise InvalidInput(f"query parameter {name!r} must be between {lo} and {hi}", field=name)
    return value


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidInput(f"query parameter {name!r} must be true or false, got {raw!r}", field=name)
