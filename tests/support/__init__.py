"""Shared test-support code, importable as ``support`` (pytest puts ``tests/`` on ``sys.path``)."""
