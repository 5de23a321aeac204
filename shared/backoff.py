"""Capped exponential backoff with jitter, for every reconnect loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays of ``initial_s * factor**n``, capped at ``cap_s``, with ±``jitter`` spread.

    `reset` after a success; `next_delay` after each failure.
    """

    initial_s: float = 0.1
    cap_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt, and count the failure."""
        base = min(self.cap_s, self.initial_s * self.factor**self.attempts)
        self.attempts += 1
        return max(0.0, base * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        """Start over after a success."""
        self.attempts = 0
