"""``python -m gateway``: serve the API with uvicorn on the configured address."""

from __future__ import annotations

import logging

import uvicorn

from flowcore.settings import GatewaySettings
from gateway.app import create_app


def main() -> None:
    settings = GatewaySettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s gateway %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)  # raises ConfigError before binding when the config is unsafe
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), access_log=False)


if __name__ == "__main__":
    main()
