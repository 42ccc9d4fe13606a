"""A circuit breaker per backend: stop calling a failing store, probe it, resume by itself.

closed ──N consecutive failures──▶ open ──cool-down elapsed──▶ half-open (one probe)
  ▲                                                              │ success │ failure
  └──────────────────────────────────────────────────────────────┘         └─▶ open

While open, calls are refused at once (no backend latency) and count as misses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CircuitBreaker"]


@dataclass
class CircuitBreaker:
    """Consecutive-failure breaker; ``allow()`` before a call, then ``success()``/``failure()``."""

    threshold: int = 5
    cooldown: float = 5.0
    failures: int = 0
    opened_at: float | None = None
    probe_started: float | None = None
    trips: int = field(default=0)
    # Told of each change: True when the circuit opens, False when it closes again.
    on_change: Callable[[bool], None] | None = field(default=None, repr=False, compare=False)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        if self.probe_started is not None or time.monotonic() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether a store call may go ahead now (at most one probe while half-open)."""
        if self.opened_at is None:
            return True
        now = time.monotonic()
        if now - self.opened_at < self.cooldown:
            return False
        # A probe that never reported back (cancelled) does not block the next one for ever.
        if self.probe_started is not None and now - self.probe_started < self.cooldown:
            return False
        self.probe_started = now  # this caller is the probe
        return True

    def success(self) -> None:
        """A call succeeded: close the circuit."""
        self.failures = 0
        was_open = self.opened_at is not None
        self.opened_at = None
        self.probe_started = None
        if was_open and self.on_change is not None:
            self.on_change(False)

    def failure(self) -> None:
        """A call failed: count it; open (again) at the threshold or when a probe fails."""
        self.failures += 1
        if self.probe_started is not None or self.failures >= self.threshold:
            opening = self.opened_at is None
            if opening:
                self.trips += 1
            self.opened_at = time.monotonic()
            self.probe_started = None
            if opening and self.on_change is not None:
                self.on_change(True)
