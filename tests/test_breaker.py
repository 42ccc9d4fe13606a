"""The circuit breaker's state machine."""

from __future__ import annotations

import time

import pytest

from cacheframe.breaker import CircuitBreaker


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


def test_opens_after_threshold(clock: list[float]) -> None:
    """N consecutive failures open it; a success in between resets the count."""
    b = CircuitBreaker(threshold=3, cooldown=5)
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.allow() and b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow() and b.trips == 1


def test_one_probe_after_cooldown(clock: list[float]) -> None:
    """After the cool-down exactly one caller probes; its failure re-opens, success closes."""
    b = CircuitBreaker(threshold=1, cooldown=5)
    b.failure()
    clock[0] += 5
    assert b.allow() is True and b.allow() is False
    b.failure()
    assert b.state == "open" and not b.allow()
    clock[0] += 5
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_lost_probe_does_not_block_forever(clock: list[float]) -> None:
    """A probe that never reports (cancelled) lets another probe through after a cool-down."""
    b = CircuitBreaker(threshold=1, cooldown=5)
    b.failure()
    clock[0] += 5
    assert b.allow()
    clock[0] += 5
    assert b.allow()
