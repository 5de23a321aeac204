"""bench/profile_summary.py: py-spy's collapsed stacks summed by cost centre."""

from __future__ import annotations

from bench.profile_summary import centre, parse, short

P = 'process 1:"python -m pricefeed gateway"'
RAW = [
    f"{P};Runner.run (asyncio/runners.py:118);send (uvicorn/protocols/http/httptools_impl.py:5) 30",
    f"{P};_frames (gateway/stream/events.py:90);frame (gateway/hub.py:44) 10",
    f"{P};Event.wait (asyncio/locks.py:213) 5",
    f"{P} 1",
    "not a stack line",
]


def test_samples_are_charged_to_the_innermost_matching_centre() -> None:
    stacks = parse(RAW)
    assert sum(stacks.values()) == 46
    by_centre: dict[str, int] = {}
    for frames, n in stacks.items():
        by_centre[centre(frames)] = by_centre.get(centre(frames), 0) + n
    assert by_centre["HTTP framing + ASGI send: uvicorn (httptools)"] == 30
    assert by_centre["hub fan-out: Hub.publish / _offer / Event.set"] == 10  # not the generator
    assert by_centre["asyncio: Event.wait / set, task steps, loop"] == 5
    assert by_centre["other"] == 1  # a sample with no Python frame


def test_frames_are_shortened_to_package_paths() -> None:
    frame = "send (/x/.venv/lib/python3.11/site-packages/uvicorn/protocols/http/h.py:5)"
    assert short(frame) == "send (uvicorn/protocols/http/h.py)"
