"""The gateway's layering (docs/ARCHITECTURE.md): the hub knows no transport, and only
`gateway.stream.framing` builds SSE bytes."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
TRANSPORTS = ("sse_starlette", "starlette", "fastapi", "uvicorn", "gateway.stream")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_hub_imports_nothing_of_sse_http_or_starlette():
    for module in ("hub.py", "updates.py", "positions.py", "cluster/hub.py"):
        bad = {n for n in imported(GATEWAY / module) if n.startswith(TRANSPORTS)}
        assert not bad, (module, bad)


def test_only_the_framing_module_builds_sse_bytes():
    builders = sorted(str(p.relative_to(GATEWAY)) for p in GATEWAY.rglob("*.py")
                      if "sse_starlette" in {n.split(".")[0] for n in imported(p)})
    assert builders == ["stream/framing.py"]
