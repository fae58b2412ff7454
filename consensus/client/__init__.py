"""The client: :func:`connect` and :class:`Board`, the handle an agent writes through."""

from quorumboard.consensus.client.board import Board, EventPage, connect

__all__ = ["Board", "EventPage", "connect"]
