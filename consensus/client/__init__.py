"""The client: :func:`connect` and :class:`Board`, the handle an agent writes through;
:func:`connect_shared` and :class:`Connection` for many Boards of one process on one socket
per replica."""

from quorumboard.consensus.client.board import (
    Board,
    Connection,
    EventPage,
    connect,
    connect_shared,
)

__all__ = ["Board", "Connection", "EventPage", "connect", "connect_shared"]
