"""Error types shared across stages.

A :class:`PermanentError` is deterministic: retrying the same task on the same input fails the same
way (a bad data batch, a rejected candidate, an alias conflict). Orchestrators should fail such a
task at once instead of retrying it.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base class of Conveyor's domain errors."""


class PermanentError(ConveyorError):
    """A failure that a retry cannot fix; the message says what failed and what to do."""
