"""The sandbox's admin endpoints (`/_sandbox/stats`, `/_sandbox/faults`, `/_sandbox/reset`,
`/_sandbox/seed`), mounted on the Graph API app (docs/architecture.md, processes)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from services.sandbox.faults import FaultInjector, FaultRule
from services.sandbox.meta import meta_router
from services.sandbox.state import MAX_SEED, SandboxState


class SeedRequest(BaseModel):
    """`POST /_sandbox/seed`: `count` campaigns of one ad account or customer at once."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["meta", "google"]
    owner: str = Field(min_length=1, max_length=64, pattern=r"^(act_)?[0-9A-Za-z_-]+$")
    count: int = Field(ge=1, le=MAX_SEED)
    paused_every: int = Field(default=0, ge=0)


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

    @router.get("/throttles")
    def throttles() -> dict[str, dict[str, object]]:
        """Each platform's latest quota block (a `throttle` rule) and the calls it got."""
        return faults.throttles()

    @router.post("/seed", status_code=201)
    def seed(body: SeedRequest) -> dict[str, list[str]]:
        """The new campaigns' ids, in order (for the caller to register with AdFlux)."""
        ids = state.seed_campaigns(body.platform, body.owner, body.count, body.paused_every)
        return {"external_ids": ids}

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
