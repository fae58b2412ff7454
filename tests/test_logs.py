"""Logging configuration: events go to whatever stderr is when they are written."""

from __future__ import annotations

import io
import sys

import structlog

from quorumboard.consensus import configure_logging


def test_logging_outlives_a_swapped_and_closed_stderr() -> None:
    # A program (or pytest's capsys) swaps stderr, configures logging, then closes that
    # stream: later events must go to the stderr of their time, not raise on a closed file.
    old = sys.stderr
    first, second = io.StringIO(), io.StringIO()
    try:
        sys.stderr = first
        configure_logging("warning", stdlib_root=False)
        structlog.get_logger("t").warning("one")
        first.close()
        sys.stderr = second
        structlog.get_logger("t").warning("two")
        assert '"event": "two"' in second.getvalue()
    finally:
        sys.stderr = old
        configure_logging("warning", stdlib_root=False)
