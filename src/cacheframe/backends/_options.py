"""Moved to :mod:`cacheframe.backends.options` (public); kept for the modules that import it here."""

from .options import _redact, parse_options

__all__ = ["_redact", "parse_options"]
