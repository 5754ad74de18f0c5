"""Protocol-faithful fakes of outside APIs, for tests only (importable as ``fakes``: the
root conftest puts ``tests/`` on ``sys.path``)."""
