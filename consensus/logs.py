"""structlog configuration shared by replicas, the CLI and tests.

Replicas log one structured event per election (role change), rejection and lease expiry at
``info``, and per commit at ``debug`` (a filtering logger makes disabled levels free, which
matters at thousands of commits per second). pysyncobj's own stdlib logging is kept at WARNING.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import TextIO

import structlog

__all__ = ["LOG_LEVELS", "configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}
LOG_LEVELS = tuple(_LEVELS)


class _CurrentStderr(io.TextIOBase):
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a
    program (or a test harness) that swaps stderr and later closes the old one must not leave
    every later log call writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", *, json: bool = True,
                      stream: TextIO | None = None, stdlib_root: bool = True) -> None:
    """Route structlog events to ``stream`` (stderr) as JSON lines (or console text).

    ``stdlib_root=False`` leaves the stdlib root logger alone: a library running inside someone
    else's program (an embedded replica) must not install handlers on it."""
    numeric = _LEVELS.get(level.lower(), logging.INFO)
    out: TextIO = stream or _CurrentStderr()  # type: ignore[assignment]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    if stdlib_root:
        logging.basicConfig(level=max(numeric, logging.WARNING), stream=out,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
