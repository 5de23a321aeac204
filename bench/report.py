"""The gateway benchmark's Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]

LOAD_COLUMNS = (
    ("scenario", "scenario"),
    ("gateway", "gateway"),
    ("loadgen", "loadgen"),
    ("connected", "clients ok"),
    ("failed", "failed"),
    ("delivered_per_s", "delivered upd/s"),
    ("pct_of_offered", "% offered"),
    ("clients_ge_95pct", "clients ≥95%"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("gateway_cpu_pct", "gw CPU %"),
    ("gateway_wait_pct", "gw wait %"),
    ("rss_mb", "gw RSS MB"),
    ("gateway_us_per_event", "gw µs/event"),
    ("loadgen_cpu_pct", "loadgen CPU %"),
    ("loadgen_us_per_event", "loadgen µs/event"),
    ("loadgen_wait_pct", "loadgen wait %"),
    ("ref_p99_ms", "ref p99 ms"),
    ("core_busy_pct", "cores busy %"),
)
IDLE_COLUMNS = (
    ("gateway", "gateway"),
    ("connected", "idle connections"),
    ("failed", "failed"),
    ("rss_before_mb", "RSS before MB"),
    ("rss_after_mb", "RSS after MB"),
    ("kb_per_connection", "KB per connection"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return "/".join(f"{v:.0f}" for v in value)
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(columns: Sequence[tuple[str, str]], rows: Sequence[Row]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r.get(key)) for key, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def _derive(row: Row) -> dict[str, Any]:
    out = dict(row)
    mb = 1024 * 1024
    if "rss_bytes" in row:
        out["rss_mb"] = round(row["rss_bytes"] / mb, 1)
    if "connected" in row and "clients" in row:
        out["connected"] = f"{row['connected']}/{row['clients']}"
    for key in ("rss_before", "rss_after"):
        if f"{key}_bytes" in row:
            out[f"{key}_mb"] = round(row[f"{key}_bytes"] / mb, 1)
    if "bytes_per_connection" in row:
        out["kb_per_connection"] = round(row["bytes_per_connection"] / 1024, 1)
    return out


def markdown(meta: Row, rows: Sequence[Row]) -> str:
    """Both tables and the conditions of the run."""
    load = [_derive(r) for r in rows if r.get("scenario") != "idle"]
    idle = [_derive(r) for r in rows if r.get("scenario") == "idle"]
    parts = [
        f"Run {meta.get('started')} · publisher: {meta.get('publisher')} · "
        f"window {meta.get('window_s')} s · `{meta.get('command')}`",
        f"Load at start: `{meta.get('uptime_start')}`",
        f"Load at end: `{meta.get('uptime_end')}`",
    ]
    if load:
        parts.append(_table(LOAD_COLUMNS, load))
    if idle:
        parts.append(_table(IDLE_COLUMNS, idle))
    failed = [f"- {r['scenario']} / {r['gateway']}: {r['error']}" for r in rows if "error" in r]
    if failed:
        parts.append("Not measured:\n" + "\n".join(failed))
    return "\n\n".join(parts) + "\n"
