"""Shared test-support code (loaded by path from conftests; see ``servers.py``)."""
