"""Shared fixtures: server processes (tests/servers/) and a fresh default cache per test."""

from __future__ import annotations
