"""The gateway: one Redis subscription per process, fanned out to browsers over SSE."""
