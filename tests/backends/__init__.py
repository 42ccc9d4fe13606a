"""The backends against real stores: conformance suites and each backend's own edges."""
