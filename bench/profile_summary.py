"""Where a gateway's CPU goes: a py-spy profile (``--format raw``) summed by cost centre.

``bench/gateway_bench.py --profile`` records the gateway over each window as collapsed
stacks (one line per distinct stack: ``frame;frame;...;leaf COUNT``, outermost first).
This prints the share of the samples, and with ``--us-per-event`` the microseconds per
event, of (1) each cost centre below, charged to the innermost frame that matches one,
(2) the top leaf functions (self time) and (3) the top functions by inclusive time.

    uv run python -m bench.profile_summary bench/results/gateway-*/profile-10hz-3k-ours-c.txt \\
        --us-per-event 25.4
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# (cost centre, pattern on a frame "function (path:line)"), innermost match wins, so the
# more specific centres come first in a stack's walk from the leaf.
CENTRES: tuple[tuple[str, str], ...] = (
    ("GC", r"^<gc>|\(garbage collection\)|gc_collect"),
    (
        "socket write: uvloop transport.write / send",
        r"^write \(.*uvloop|transport\.write|"
        r"^_write \(|sock_send|^send \(.*socket",
    ),
    ("HTTP framing + ASGI send: uvicorn (httptools)", r"uvicorn/protocols/http/"),
    ("SSE response: gateway/stream/response.py PriceStream._stream",
     r"gateway/stream/(response|liveness|shutdown)\.py"),
    ("SSE framing: gateway/stream/framing.py + sse-starlette",
     r"sse_starlette/|gateway/stream/framing\.py"),
    ("hub fan-out: Hub.publish / _offer / Event.set", r"gateway/hub\.py"),
    ("stream generator: gateway/stream/events.py _frames",
     r"gateway/stream/(events|endpoint)\.py"),
    ("Redis subscriber + decoding", r"gateway/price_feed\.py|redis/|shared/codec\.py"),
    ("asyncio: Event.wait / set, task steps, loop", r"asyncio/|uvloop/"),
    ("starlette / fastapi / middleware", r"starlette/|fastapi/|gateway/app\.py"),
)


def parse(lines: Iterable[str]) -> Counter[tuple[str, ...]]:
    """Stacks (outermost first) and their sample counts."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = tuple(f for f in stack.split(";") if not f.startswith(("process ", "thread ")))
        stacks[frames or ("(no Python frame)",)] += int(count)
    return stacks


def centre(frames: tuple[str, ...]) -> str:
    for frame in reversed(frames):
        for name, pattern in CENTRES:
            if re.search(pattern, frame):
                return name
    return "other"


def short(frame: str) -> str:
    """``func (…/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    m = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    path = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", path)
    path = re.sub(r"^.*/(gateway|shared|bench)/", r"\1/", path)
    return f"{func} ({path})"


def table(title: str, counts: Counter[str], total: int, per_event: float | None, n: int) -> str:
    rows = [
        f"| {title} | samples % | µs per event |" if per_event else f"| {title} | samples % |",
        "|---|---:|---:|" if per_event else "|---|---:|",
    ]
    for name, c in counts.most_common(n):
        share = c / total
        cells = f"| {name} | {100 * share:.1f} |"
        rows.append(cells + (f" {share * per_event:.1f} |" if per_event else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--us-per-event", type=float, help="the gateway's CPU per event, measured")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    stacks = parse(args.profile.read_text().splitlines())
    total = sum(stacks.values())
    if not total:
        raise SystemExit(f"{args.profile}: no samples")
    centres: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks.items():
        centres[centre(frames)] += count
        leaves[short(frames[-1])] += count
        for f in {short(f) for f in frames}:
            inclusive[f] += count
    print(f"{total} samples in {args.profile}\n")
    print(table("cost centre", centres, total, args.us_per_event, len(CENTRES) + 1) + "\n")
    print(table("function (self)", leaves, total, args.us_per_event, args.top) + "\n")
    print(table("function (inclusive)", inclusive, total, args.us_per_event, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
