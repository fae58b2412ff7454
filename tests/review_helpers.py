"""Helpers of the regression tests from cold reviews: a broken precondition is reported as
``Precondition`` (a RuntimeError), never mistaken for the property under test failing."""

from __future__ import annotations

import time
from collections.abc import Callable


class Precondition(RuntimeError):
    """The scenario did not set up as intended (not the bug under test)."""


def require(condition: object, what: str) -> None:
    if not condition:
        raise Precondition(what)


def poll(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise Precondition(f"timed out waiting for {what}")


