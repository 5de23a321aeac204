"""The demo page: ``GET /`` and ``/static/*`` from ``gateway/static/`` (404 when absent)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


def _file(relative: str) -> FileResponse:
    root = STATIC_DIR.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(404, f"no such file: {relative[:100]}")
    return FileResponse(path)


# HEAD too: uptime checks often use it (FileResponse sends the headers only).
@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index() -> FileResponse:
    """The live page."""
    return _file("index.html")


@router.api_route("/static/{relative:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def static_file(relative: str) -> FileResponse:
    """A file of the page (scripts, styles)."""
    return _file(relative)
