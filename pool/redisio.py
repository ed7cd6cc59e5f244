"""redis-py 5 types its async commands as ``Awaitable[T] | T``; :func:`aw` awaits them typed."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar, cast

T = TypeVar("T")


async def aw(value: Awaitable[T] | T) -> T:
    if inspect.isawaitable(value):
        return await cast(Awaitable[T], value)
    return value
