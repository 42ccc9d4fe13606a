"""Built-in backends; each registers in the ``cacheframe.backends`` entry-point group."""
