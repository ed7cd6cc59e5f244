"""How a route declares itself to the OpenAPI document: parameters, body, answers and errors.

Each served route has an :class:`Op` in :data:`gateway.apiops.OPERATIONS`; :mod:`gateway.openapi`
turns them into the document and ``tests/unit/test_openapi_spec.py`` fails when a served route has
none. The pool forwarder's catch-all routes (``/v1/pools/{rest:path}``...) are declared as the pool
service's concrete paths, each with ``served_by`` naming the catch-all that serves it.

Error answers are derived, so that a declaration cannot forget the ones every route can give:

- every route: 503 (Redis unreachable; ``Retry-After``); a route behind the bearer token also 401,
  403 (scope), 421 (``Host`` not served) and 429 (too many failed authentications);
- a path parameter: 422 (the id rule of :mod:`flowcore.ids`) and 404 (nothing by that id);
- a query parameter or header: 422 naming it;
- a body: 400 (not JSON/YAML), 413 (too large or too deep), 422 (naming the field);
- anything else a route can answer (409, 404 without path parameters...) is in ``errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flowcore.ids import ID_PATTERN, MAX_ID_LENGTH

Schema = dict[str, Any]
SchemaLike = type[BaseModel] | Schema

YAML = "application/yaml"
JSON = "application/json"
TEXT = "text/plain"
SSE = "text/event-stream"
TAR = "application/x-tar"

ID_SCHEMA: Schema = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": MAX_ID_LENGTH}
ERROR_REF = "#/components/schemas/ErrorBody"
REASONS = {
    400: "The body is not a JSON (or YAML) document.",
    401: "No bearer token, a wrong one, or a bad webhook signature.",
    403: "The token's scopes (or workflows) do not allow this.",
    404: "Nothing by that id.",
    409: "The resource is not in a state that allows this.",
    413: "The body is too large, too deep or has too many values.",
    421: "This gateway does not serve the request's Host.",
    422: "A parameter, header or field is invalid; `field` names it.",
    429: "Too many requests from this client (see `Retry-After`).",
    502: "The pool service failed to act on the container engine.",
    503: "A dependency (Redis, the pool service, the secret store) is unavailable (see `Retry-After`).",
}
AUTH_ERRORS = frozenset({401, 403, 421, 429})
TEXT_SCHEMA: Schema = {"type": "string"}
RETRY_AFTER: Schema = {"type": "integer", "minimum": 0}  # seconds
# One server-sent event (``event:``, ``data:`` with a JSON object, ``id:``; see docs/api.md).
SSE_EVENT: Schema = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer"}},
}
OTHER_MEDIA: dict[str, Schema] = {SSE: SSE_EVENT, TAR: {"type": "string", "format": "binary"}}


@dataclass(frozen=True)
class Param:
    """A query parameter or a request header."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False
    where: str = "query"


@dataclass(frozen=True)
class Body:
    """A request or answer body: one schema (a model or a JSON schema) under some media types."""

    schema: SchemaLike | None
    media: tuple[str, ...] = (JSON,)
    description: str = ""
    headers: Mapping[str, Schema] = field(default_factory=dict)  # answer headers (e.g. Location)


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    answers: Mapping[int, Body]
    query: tuple[Param, ...] = ()
    body: Body | None = None
    body_required: bool = True
    errors: frozenset[int] = frozenset()
    public: bool = False
    served_by: str | None = None  # the Starlette route serving it, when its path differs (the forwarder)
    tags: tuple[str, ...] = ()
    path_schemas: Mapping[str, Schema] = field(default_factory=dict)

    @property
    def route_path(self) -> str:
        return self.served_by or self.path

    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{") and part.endswith("}")]

    def error_codes(self) -> list[int]:
        codes = {503} | set(self.errors)
        if not self.public:
            codes |= AUTH_ERRORS
        if self.path_params():
            codes |= {404, 422}
        if self.query:
            codes.add(422)
        if self.body is not None:
            codes |= {400, 413, 422}
        return sorted(codes)


def q_int(name: str, lo: int, hi: int, description: str = "") -> Param:
    return Param(name, {"type": "integer", "minimum": lo, "maximum": hi}, description)


def q_bool(name: str, description: str = "") -> Param:
    return Param(name, {"type": "boolean"}, description)


def q_str(name: str, description: str = "", **schema: Any) -> Param:
    return Param(name, {"type": "string", **schema}, description)


def q_enum(name: str, values: list[str], description: str = "") -> Param:
    return Param(name, {"type": "string", "enum": values}, description)


def json_of(schema: SchemaLike, description: str = "") -> Body:
    return Body(schema, (JSON,), description)


def empty(description: str) -> Body:
    return Body(None, (), description)


class Components:
    """The document's ``components.schemas``: models by name, their nested definitions included."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def ref(self, schema: SchemaLike, *, mode: str = "validation") -> Schema:
        if isinstance(schema, dict):
            return schema
        name = schema.__name__
        if name not in self.schemas:
            built = schema.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}", mode=mode  # type: ignore[arg-type]
            )
            for sub, definition in built.pop("$defs", {}).items():
                self.schemas.setdefault(sub, definition)
            self.schemas[name] = built
        return {"$ref": f"#/components/schemas/{name}"}


def operation(op: Op, components: Components) -> Schema:
    """The OpenAPI operation object of ``op``."""
    out: Schema = {"operationId": operation_id(op), "summary": op.summary}
    if op.tags:
        out["tags"] = list(op.tags)
    params: list[Schema] = [
        {"name": name, "in": "path", "required": True, "schema": dict(op.path_schemas.get(name, ID_SCHEMA))}
        for name in op.path_params()
    ]
    for p in op.query:
        entry: Schema = {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema}
        if p.description:
            entry["description"] = p.description
        if p.schema.get("type") == "array":
            entry["style"], entry["explode"] = "form", True
        params.append(entry)
    if params:
        out["parameters"] = params
    if op.body is not None:
        ref = components.ref(op.body.schema) if op.body.schema is not None else {}
        out["requestBody"] = {"required": op.body_required, "content": {m: {"schema": ref} for m in op.body.media}}
    responses: Schema = {}
    for status, answer in sorted(op.answers.items()):
        entry = {"description": answer.description or "OK"}
        if answer.media:
            schema = components.ref(answer.schema, mode="serialization") if answer.schema is not None else {}
            entry["content"] = {m: {"schema": schema if m == JSON else OTHER_MEDIA.get(m, TEXT_SCHEMA)}
                                for m in answer.media}
        if answer.headers:
            entry["headers"] = {name: {"schema": schema} for name, schema in answer.headers.items()}
        responses[str(status)] = entry
    for status in op.error_codes():
        if str(status) not in responses:
            responses[str(status)] = {
                "description": REASONS.get(status, "Error."),
                "content": {JSON: {"schema": {"$ref": ERROR_REF}}},
            }
            if status in (429, 503):
                responses[str(status)]["headers"] = {"Retry-After": {"schema": RETRY_AFTER}}
    out["responses"] = responses
    out["security"] = [] if op.public else [{"bearer": []}]
    return out


def operation_id(op: Op) -> str:
    words = [op.method.lower()]
    for part in op.path.split("/"):
        if part and part != "v1":
            words.append(part.strip("{}").replace("-", "_").replace(".", "_"))
    return "_".join(words)
