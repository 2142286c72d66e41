"""The sandbox's admin endpoints (`/_sandbox/stats`, `/_sandbox/faults`, `/_sandbox/reset`),
mounted on the Graph API app (docs/architecture.md, processes)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.sandbox.faults import FaultInjector, FaultRule
from services.sandbox.meta import meta_router
from services.sandbox.state import SandboxState


def admin_router(state: SandboxState, faults: FaultInjector) -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox admin"])

    @router.get("/stats")
    def stats() -> dict[str, object]:
        return state.stats()

    @router.get("/faults")
    def list_faults() -> list[dict[str, object]]:
        return faults.rules()

    @router.post("/faults", status_code=201)
    def add_fault(rule: FaultRule) -> list[dict[str, object]]:
        faults.add(rule)
        return faults.rules()

    @router.delete("/faults", status_code=204)
    def clear_faults() -> None:
        faults.clear()

    @router.post("/reset", status_code=204)
    def reset() -> None:
        faults.clear()
        state.reset()

    return router


def build_graph_app(state: SandboxState, faults: FaultInjector) -> FastAPI:
    """Admin routes first: the Graph API's catch-all `/{version}/{path}` would shadow them."""
    app = FastAPI(title="AdFlux ad-platform sandbox", docs_url=None, redoc_url=None)
    app.include_router(admin_router(state, faults))
    app.include_router(meta_router(state, faults))
    return app
