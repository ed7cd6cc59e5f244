"""Every path parameter of the API is an id (:mod:`flowcore.ids`), checked before the route runs.

``{workflow_id}``, ``{trigger_id}``, a state ``{key}``: whatever a route names, a value outside the
id rule is answered 422 naming the parameter, before any Redis key is built from it. A route whose
parameter is not an id declares it in :data:`NOT_IDS` and checks it itself (the pool forwarder's
``{rest}``, see :mod:`gateway.routes.pools`).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flowcore.ids import check_id

NOT_IDS = frozenset({"rest"})


class CheckedIds:
    """Wraps one route's ASGI app: the router has filled ``path_params`` by the time it is called."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("path_params", {}).items():
            if name not in NOT_IDS and isinstance(value, str):
                check_id(value, name)  # InvalidInput: answered 422 by the app's error handlers
        await self.app(scope, receive, send)


def check_path_ids(routes: Iterable[BaseRoute]) -> None:
    """Put :class:`CheckedIds` in front of every route with path parameters (in place)."""
    for route in routes:
        if isinstance(route, Route) and route.param_convertors and not isinstance(route.app, CheckedIds):
            route.app = CheckedIds(route.app)
