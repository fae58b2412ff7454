"""The workload's own rules, with a stand-in board (no cluster): a client whose write ended
indeterminate continues on a fresh board, so its next identical command is a new operation and
not an implicit retry of the unknown one (which would return the old result — one operation
recorded as two, the false violation the long campaign hit on the counter workload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from quorumboard.consensus.errors import OutcomeUnknown
from quorumboard.consensus.testing.history import HistoryWriter, read_history
from quorumboard.consensus.testing.workload import CounterWorkload


class _Entry:
    def __init__(self, value: int) -> None:
        self.value = value
        self.version = value


class _Board:
    made: ClassVar[list[_Board]] = []

    def __init__(self, unknown_first: bool) -> None:
        self.unknown_first = unknown_first
        self.total = 0
        self.closed = False
        _Board.made.append(self)

    def set_policy(self, *_a: Any, **_k: Any) -> None:
        return None

    def put(self, key: str, value: int) -> _Entry:
        if self.unknown_first:
            self.unknown_first = False
            raise OutcomeUnknown("deadline ran out")
        self.total += value
        return _Entry(self.total)

    def get(self, key: str) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def test_a_client_continues_on_a_fresh_board_after_an_indeterminate_write(tmp_path: Path) -> None:
    _Board.made = []
    writers: list[_Board] = []

    def writer_for(name: str) -> Any:
        board = _Board(unknown_first=name == "c0" and not writers)
        if name == "c0":
            writers.append(board)
        return board

    workload = CounterWorkload(clients=1, keys=1, ops_per_client=3, duration_s=5.0,
                               rate_per_s=10_000.0, read_share=0.0, final_reads=False)
    with HistoryWriter(tmp_path / "h.jsonl") as history:
        workload.run(writer_for, lambda name, n: _Board(False), history)
    kinds = [r.type for r in read_history(tmp_path / "h.jsonl")[0] if r.type != "invoke"]
    assert kinds == ["info", "ok", "ok"]
    assert len(writers) == 2 and writers[0].closed, "the board of the unknown write is dropped"
    assert all(b.closed for b in _Board.made), "every board is closed"
