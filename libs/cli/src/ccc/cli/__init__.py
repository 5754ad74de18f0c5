"""The ``ccc`` command."""
