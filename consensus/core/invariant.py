"""Invariant checks that ``python -O`` cannot strip.

``assert`` disappears under ``-O``; a replica must never silently continue past a broken
invariant, so checks go through :func:`check` instead.
"""

from __future__ import annotations

from quorumboard.consensus.errors import InvariantViolation

__all__ = ["check"]


def check(condition: bool, message: str) -> None:
    """Raise :class:`InvariantViolation` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InvariantViolation(message)
