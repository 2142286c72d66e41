"""The gateway's FastAPI application: routes, health endpoints, the monitor page, and the
background parts it owns (outbox relay, read-model consumer) started and stopped with it."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.api import router
from services.gateway.auth import TokenRegistry
from services.gateway.candidates import router as candidates_router
from services.gateway.cluster import KafkaInspector
from services.gateway.console import router as console_router
from services.gateway.intake import TaskIntake
from services.gateway.live import LiveTasks
from services.gateway.monitor import router as monitor_router
from services.gateway.schedules import router as schedules_router
from services.gateway.schemas import validation_errors
from services.gateway.settings import GatewaySettings
from shared.service import Component, ServiceKit, supervise


def create_app(
    settings: GatewaySettings,
    kit: ServiceKit,
    live: LiveTasks,
    components: list[Component],
    readiness: dict[str, Callable[[], bool]],
    inspector: KafkaInspector | None = None,
) -> FastAPI:
    intake = TaskIntake(kit.db, kit.outbox, live.hub)
    components = [*components, intake]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for component in components:
            component.start()
        stopping = threading.Event()

        def watch() -> None:
            dead = supervise(components, stopping)
            if dead:  # uvicorn stops; __main__ then exits non-zero for the supervisor
                app.state.dead_components = dead
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="supervisor", daemon=True).start()
        yield
        stopping.set()
        for component in reversed(components):
            component.stop()
        kit.producer.close()

    app = FastAPI(
        title="AdFlux Events gateway",
        version="1.0",
        description="Publish ad campaigns, run and watch tasks, operate dead letters.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,  # 413 above it
    )
    app.state.dead_components = []
    app.state.settings = settings
    app.state.db = kit.db
    app.state.outbox = kit.outbox
    app.state.live = live
    app.state.hub = live.hub
    app.state.intake = intake
    app.state.kafka = inspector or KafkaInspector(
        settings.kafka_bootstrap, kit.names, settings.worker_health_urls
    )
    app.state.tokens = TokenRegistry(
        settings.api_token.get_secret_value(), settings.api_tokens.get_secret_value()
    )
    app.include_router(router)
    app.include_router(candidates_router)
    app.include_router(console_router)
    app.include_router(schedules_router)
    app.include_router(monitor_router)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        dead = [type(c).__name__ for c in components if not c.healthy()]
        if dead:
            return JSONResponse({"status": "failing", "dead": dead}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        failing = [name for name, check in readiness.items() if not check()]
        body: dict[str, Any] = {
            "status": "ready" if not failing else "not ready",
            "failing": failing,
        }
        return JSONResponse(body, status_code=503 if failing else 200)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
