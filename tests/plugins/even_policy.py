"""A custom conflict policy for tests: only even integers may be stored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quorumboard.consensus import Accept, Current, Reject, Write, register_policy


def even_only(current: Current | None, write: Write, params: Mapping[str, Any]) -> Accept | Reject:
    if write.op == "put" and (not isinstance(write.value, int) or write.value % 2):
        return Reject("odd", f"{write.value!r} is not an even integer")
    return Accept(write.value, "even")


register_policy("even-only", even_only, version="1")
