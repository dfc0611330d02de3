"""create_app(settings): the whole service on one screen. Nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from runtime import __version__
from runtime.manager import ModelManager
from runtime.service import console_routes, metrics
from runtime.service.apis.anthropic import routes as anthropic
from runtime.service.apis.foundry import routes as foundry
from runtime.service.apis.media import routes as media
from runtime.service.apis.ollama import routes as ollama
from runtime.service.apis.openai import routes as openai
from runtime.service.apis.responses import routes as responses
from runtime.service.errors import EXCEPTION_HANDLERS
from runtime.service.openapi import document_errors
from runtime.service.security import SecurityMiddleware, cors_config

if TYPE_CHECKING:
    from runtime.service.settings import ServiceSettings

__all__ = ["create_app"]

API_ROUTES = (openai, foundry, media, responses, anthropic, ollama)  # each: apis/<name>/routes.py


def create_app(settings: ServiceSettings) -> Litestar:
    @asynccontextmanager
    async def manage_models(app: Litestar) -> AsyncIterator[None]:
        from runtime.store import Store

        manager = ModelManager(
            Store(),
            max_loaded=settings.max_loaded,
            ttl=settings.ttl,
            queue_size=settings.queue_size,
        )
        manager.add_listener(metrics.record_generation)
        app.state.manager = manager
        await manager.start()
        try:
            yield
        finally:
            await manager.close()

    def provide_manager(state: State) -> ModelManager:
        return state.manager

    app = Litestar(
        route_handlers=[handler for module in API_ROUTES for handler in module.ROUTES]
        + console_routes.routes(settings),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[manage_models],
        dependencies={"manager": Provide(provide_manager, sync_to_thread=False)},
        middleware=[  # outermost first: refused requests (401/403) are counted too
            metrics.MetricsMiddleware,
            DefineMiddleware(
                SecurityMiddleware,  # type: ignore[arg-type]  # an ASGI class; Litestar's stub wants a function
                bound_host=settings.host,
                api_key=settings.api_key,
                cors_origins=settings.cors_origins,
            ),
        ],
        cors_config=cors_config(settings.cors_origins),
        request_max_body_size=settings.max_body_bytes,
        state=State({"settings": settings}),
        # /openapi.json (behind the same key as every route): each JSON route's real request
        # Struct, declared as `data` with transport.WireBody, so a fuzzer learns the bodies.
        openapi_config=OpenAPIConfig(
            title="foundry",
            version=__version__,
            path="/openapi.json",
            render_plugins=[JsonRenderPlugin(path="/")],
        ),
        debug=False,
    )
    document_errors(app)  # the cached document: errors in each API's shape
    return app
