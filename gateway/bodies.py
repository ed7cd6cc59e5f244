"""Reading request bodies: JSON or YAML in, pydantic models out, clear 4xx on anything else."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

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
    if allow_yaml and ctype in YAML_TYPES:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise MalformedBody(f"malformed YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedBody("request body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


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
