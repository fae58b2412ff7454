"""One rule for JSON Lines written by a process that may be killed (chaos histories, fault
timelines, team events, sweep results): a record is complete once its newline is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorumboard.consensus import CorruptData
from quorumboard.consensus.testing import drop_torn_tail, read_jsonl

records = st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=3),
                   max_size=8)


@given(records=records, cut=st.integers(min_value=0))
def test_a_killed_writer_leaves_exactly_its_complete_records(
        tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, int]], cut: int) -> None:
    """Invariant after a crash at any byte: readers see exactly the records whose newline was
    written, in order, and say whether a torn tail was skipped; the appender's cut agrees."""
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    cut %= len(data) + 1
    path = tmp_path_factory.mktemp("jsonl") / "f.jsonl"
    path.write_bytes(data[:cut])
    complete = data[:cut].count(b"\n")
    got, note = read_jsonl(path, json.loads)
    assert got == records[:complete]
    torn = cut > 0 and data[cut - 1:cut] != b"\n"
    assert bool(note) == torn
    assert drop_torn_tail(path) == (cut - (data[:cut].rfind(b"\n") + 1) if torn else 0)
    assert read_jsonl(path, json.loads) == (records[:complete], "")


def test_damage_in_a_complete_line_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(CorruptData, match=r"f\.jsonl: line 2 is not a thing"):
        read_jsonl(path, json.loads, what="thing")
    path.write_bytes(b'{"a": 1}\n' + b"x" * 50 + b"\n")
    with pytest.raises(CorruptData, match="longer than 10 bytes"):
        read_jsonl(path, json.loads, line_bytes_max=10)


def test_a_parseable_unterminated_line_is_still_torn(tmp_path: Path) -> None:
    """The writer died before the newline: the record does not count, even though it parses
    (one rule for readers and appenders, which cut it)."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')
    assert read_jsonl(path, json.loads) == ([{"a": 1}], "dropped a torn last line (8 bytes)")
    assert drop_torn_tail(path) == 8 and path.read_bytes() == b'{"a": 1}\n'
    assert drop_torn_tail(tmp_path / "missing.jsonl") == 0
