"""Example cacheframe plugin: a backend keeping entries in a SQLite file."""
