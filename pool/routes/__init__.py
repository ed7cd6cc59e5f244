"""HTTP routes of the pool service, one module per resource."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from flowcore.errors import InvalidInput, MalformedBody

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    """The request body as ``model``; 400 for unparseable JSON, 422 naming the first bad field."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if errors and errors[0].get("type") == "json_invalid":
            raise MalformedBody(f"the body is not valid JSON: {errors[0].get('msg')}") from None
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        details: list[dict[str, Any]] = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ())),
                "message": e.get("msg"),
                "type": e.get("type"),
            }
            for e in errors
        ]
        raise InvalidInput(
            f"{field or 'body'}: {first.get('msg', 'invalid')}", field=field, details=details
        ) from None
