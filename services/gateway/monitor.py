"""The /monitor operator page (Flower's job) and its static files, served with a Content
Security Policy that runs only the page's own script: no inline script or handler can run,
whatever text a task name or an error message carries."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
FILES = {"monitor.js": "text/javascript", "monitor.css": "text/css"}

router = APIRouter(include_in_schema=False)


@router.get("/monitor")
def monitor_page() -> FileResponse:
    return FileResponse(STATIC / "monitor.html", media_type="text/html", headers=HEADERS)


@router.get("/monitor/{name}")
def monitor_file(name: str) -> FileResponse:
    media_type = FILES.get(name)
    if media_type is None:
        raise HTTPException(404, "not found")
    return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)
