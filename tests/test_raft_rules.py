"""Table tests for the two Raft rules quorumboard enforces in front of pysyncobj, without a node:

* Raft §5.3 (log matching, AppendEntries receiver steps 2-5): ``_trim_matching_entries`` in
  consensus/raft/_pysyncobj.py: entries the follower already has are not truncated, a
  conflicting suffix is, and the commit index never passes what the message verified;
* thesis §6.4 (ReadIndex): ``round_members`` picks the members a heartbeat round goes to first
  (a majority with the leader, those that answered the newest round first), the rest waiting
  for the round's widening;
* the wire schema (consensus/raft/transport.py ``validate_message`` / ``decode_message``): every
  message pysyncobj would act on is well formed, every malformed kind is refused with a
  :class:`ProtocolError` before pysyncobj sees it (pysyncobj indexes messages unchecked).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from quorumboard.consensus.errors import ProtocolError
from quorumboard.consensus.raft._pysyncobj import _trim_matching_entries, round_members
from quorumboard.consensus.raft.transport import decode_message, validate_message

# A follower's journal: (command, index, term), indexes 5..9 (a compacted prefix before 5).
JOURNAL = [(b"\x00a", 5, 1), (b"\x00b", 6, 1), (b"\x00c", 7, 2), (b"\x00d", 8, 2),
           (b"\x00e", 9, 3)]


def _append(prev: tuple[int, int] | None, entries: list[tuple[int, int]],
            commit: int) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "append_entries", "term": 3, "commit_index": commit,
                               "entries": [(b"\x00x", i, t) for i, t in entries]}
    if prev is not None:
        message["prevLogIdx"], message["prevLogTerm"] = prev
    return message


# (case, journal, message, expected entries left, expected prev, expected commit, no conflict)
TRIM_CASES = [
    ("§5.3 every entry already in the log: none left to append, nothing truncated",
     JOURNAL, _append((6, 1), [(7, 2), (8, 2)], 9), [], (8, 2), 8, True),
    ("§5.3 a re-sent suffix up to the last entry: skipped whole, nothing truncated",
     JOURNAL, _append((5, 1), [(6, 1), (7, 2), (8, 2), (9, 3)], 9), [], (9, 3), 9, True),
    ("§5.3 matching prefix then new entries: prefix skipped, the rest appended",
     JOURNAL, _append((7, 2), [(8, 2), (9, 3), (10, 3)], 10), [(10, 3)], (9, 3), 10, False),
    ("§5.3 a conflicting suffix (same index, other term) is left to truncate",
     JOURNAL, _append((7, 2), [(8, 2), (9, 4)], 9), [(9, 4)], (8, 2), 9, False),
    ("§5.3 conflict at the first entry: message unchanged but the commit clamp",
     JOURNAL, _append((6, 1), [(7, 5)], 7), [(7, 5)], (6, 1), 7, False),
    ("§5.3 a heartbeat (no entries) that matches: nothing to truncate, commit clamped",
     JOURNAL, _append((8, 2), [], 9), [], (8, 2), 8, True),
]

# (case, journal, message): handed to pysyncobj unchanged, truncation not suppressed.
UNCHANGED_CASES = [
    ("empty journal", [], _append((0, 0), [(1, 1)], 1)),
    ("§5.3 prevLogIdx past the end of the log: the leader must back up",
     JOURNAL, _append((12, 3), [(13, 3)], 13)),
    ("§5.3 prevLogIdx before the compacted prefix", JOURNAL, _append((3, 1), [(4, 1)], 4)),
    ("§5.3 prevLogTerm does not match: the leader must back up",
     JOURNAL, _append((7, 1), [(8, 2)], 8)),
    ("entries not consecutive after prevLogIdx", JOURNAL, _append((6, 1), [(7, 2), (9, 3)], 9)),
    ("no prevLogIdx (a snapshot chunk)", JOURNAL, _append(None, [], 9)),
]


@pytest.mark.parametrize("case,journal,message,left,prev,commit,clean", TRIM_CASES,
                         ids=[c[0] for c in TRIM_CASES])
def test_raft_5_3_trim_matching_entries(case: str, journal: list[Any], message: dict[str, Any],
                                        left: list[tuple[int, int]], prev: tuple[int, int],
                                        commit: int, clean: bool) -> None:
    """Raft §5.3: skip what the log already holds; truncate only on a real conflict; Figure 2:
    commitIndex = min(leaderCommit, index of the last entry this message verified)."""
    trimmed, no_conflict = _trim_matching_entries(journal, message)  # type: ignore[arg-type]
    assert [(e[1], e[2]) for e in trimmed["entries"]] == left, case
    assert (trimmed["prevLogIdx"], trimmed["prevLogTerm"]) == prev, case
    assert trimmed["commit_index"] == commit, case
    assert no_conflict is clean, case
    assert message["commit_index"] >= commit, "the input message is not modified"


@pytest.mark.parametrize("case,journal,message", UNCHANGED_CASES,
                         ids=[c[0] for c in UNCHANGED_CASES])
def test_raft_5_3_trim_leaves_unverifiable_messages_to_pysyncobj(
        case: str, journal: list[Any], message: dict[str, Any]) -> None:
    """Raft §5.3: when the message cannot be matched against the log, it goes to pysyncobj as
    sent (which refuses it or truncates), and truncation is not suppressed."""
    trimmed, no_conflict = _trim_matching_entries(journal, message)  # type: ignore[arg-type]
    assert trimmed == message and no_conflict is False, case


# --- incoming-message validation ---------------------------------------------------------------

CMD_MAX = 64
VALID = [
    {"type": "request_vote", "term": 2, "last_log_index": 9, "last_log_term": 1},
    {"type": "response_vote", "term": 2},
    {"type": "append_entries", "term": 2, "commit_index": 4},  # heartbeat
    {"type": "append_entries", "term": 2, "commit_index": 4, "prevLogIdx": 3, "prevLogTerm": 1,
     "entries": ((b"\x00a", 4, 2),)},
    {"type": "append_entries", "term": 2, "commit_index": 4, "serialized": (b"chunk", True, False)},
    {"type": "append_entries", "term": 2, "commit_index": 4, "serialized": False},
    {"type": "next_node_idx", "next_node_idx": 5, "reset": False, "success": True, "term": 2},
    {"type": "next_node_idx", "next_node_idx": 3, "reset": True, "success": False, "term": 0},
    {"type": "apply_command", "command": b"\x00x", "request_id": 7},
    {"type": "apply_command_response", "request_id": 7, "log_idx": 4, "log_term": 2},
    {"type": "apply_command_response", "request_id": 7, "error": 1},
    {"type": "timeout_now", "term": 3},
    # ReadIndex (Raft thesis §6.4): the round on appends and replies, the round's heartbeat,
    # a follower's request for a read index and the leader's answer (with or without one).
    {"type": "append_entries", "term": 2, "commit_index": 4, "prevLogIdx": 4, "prevLogTerm": 2,
     "entries": (), "round": 17},
    {"type": "next_node_idx", "next_node_idx": 5, "reset": False, "success": True, "term": 2,
     "round": 17},
    {"type": "qb_heartbeat", "term": 2, "round": 18},
    {"type": "qb_heartbeat_reply", "term": 2, "round": 18},
    {"type": "qb_read_index", "read_id": 3, "term": 2},
    {"type": "qb_read_index_reply", "read_id": 3, "read_index": 41},
    {"type": "qb_read_index_reply", "read_id": 3},
]

MALFORMED = [
    ("not a map", [1, 2, 3], "not a map"),
    ("unknown type (a utility command)", {"type": "status"}, "not allowed"),
    ("type missing", {"term": 1}, "not allowed"),
    ("an extra field", {"type": "response_vote", "term": 1, "vote": True}, "unexpected fields"),
    ("a required field missing", {"type": "request_vote", "term": 1, "last_log_index": 1},
     "lacks last_log_term"),
    ("a negative term", {"type": "response_vote", "term": -1}, "non-negative int"),
    ("a bool as an int", {"type": "timeout_now", "term": True}, "non-negative int"),
    ("flags not booleans", {"type": "next_node_idx", "next_node_idx": 1, "reset": 0,
                            "success": 1, "term": 1}, "booleans"),
    ("§5.1 an AppendEntries reply without its term (a replica of an older version)",
     {"type": "next_node_idx", "next_node_idx": 1, "reset": False, "success": True},
     "next_node_idx lacks term"),
    ("§5.1 an AppendEntries reply with a negative term",
     {"type": "next_node_idx", "next_node_idx": 1, "reset": False, "success": True, "term": -1},
     "next_node_idx.term is not a non-negative int"),
    ("§5.1 an AppendEntries reply with a term that is not an int",
     {"type": "next_node_idx", "next_node_idx": 1, "reset": False, "success": True, "term": "2"},
     "next_node_idx.term is not a non-negative int"),
    ("§5.1 an AppendEntries reply with a bool as its term",
     {"type": "next_node_idx", "next_node_idx": 1, "reset": False, "success": True,
      "term": True}, "next_node_idx.term is not a non-negative int"),
    ("§6.4 a heartbeat answer without its term",
     {"type": "qb_heartbeat_reply", "round": 1}, "qb_heartbeat_reply lacks term"),
    ("§6.4 a negative round", {"type": "qb_heartbeat", "term": 1, "round": -1},
     "qb_heartbeat.round is not a non-negative int"),
    ("§6.4 a read index that is not an int",
     {"type": "qb_read_index_reply", "read_id": 1, "read_index": "9"},
     "qb_read_index_reply.read_index is not a non-negative int"),
    ("§6.4 a read request with an extra field",
     {"type": "qb_read_index", "read_id": 1, "term": 2, "read_index": 9}, "unexpected fields"),
    ("§6.4 a read request without the asker's term", {"type": "qb_read_index", "read_id": 1},
     "qb_read_index lacks term"),
    ("empty command", {"type": "apply_command", "command": b""}, "out of bounds"),
    ("oversized command", {"type": "apply_command", "command": b"x" * (CMD_MAX + 2)},
     "out of bounds"),
    ("command response without position", {"type": "apply_command_response", "request_id": 1},
     "log position"),
    ("§5.3 entry with a bad index", {"type": "append_entries", "term": 1, "commit_index": 0,
                                     "prevLogIdx": 0, "prevLogTerm": 0,
                                     "entries": ((b"\x00a", -1, 1),)}, "entries invalid"),
    ("§5.3 entry not a triple", {"type": "append_entries", "term": 1, "commit_index": 0,
                                 "prevLogIdx": 0, "prevLogTerm": 0, "entries": ((b"\x00a", 1),)},
     "entries invalid"),
    ("§5.3 prevLogTerm not an int", {"type": "append_entries", "term": 1, "commit_index": 0,
                                     "prevLogIdx": 0, "prevLogTerm": "1", "entries": ()},
     "prevLogTerm invalid"),
    ("entries and a snapshot at once", {"type": "append_entries", "term": 1, "commit_index": 0,
                                        "prevLogIdx": 0, "prevLogTerm": 0, "entries": (),
                                        "serialized": None}, "mixes"),
    ("entries without prevLogIdx", {"type": "append_entries", "term": 1, "commit_index": 0,
                                    "entries": ()}, "without prevLogIdx"),
    ("§7 a malformed snapshot chunk", {"type": "append_entries", "term": 1, "commit_index": 0,
                                       "serialized": (b"x", 1, 0)}, "serialized invalid"),
]


@pytest.mark.parametrize("message", VALID, ids=[f"{m['type']}-{i}" for i, m in enumerate(VALID)])
def test_valid_raft_messages_pass_validation(message: dict[str, Any]) -> None:
    """Every message kind pysyncobj exchanges (Raft §5.2 votes, §5.3 appends, §7 snapshots)
    passes, also after a round trip through the wire codec."""
    assert validate_message(dict(message), CMD_MAX)["type"] == message["type"]
    payload = msgpack.packb(message, use_bin_type=True)
    assert decode_message(payload, 2**20, CMD_MAX)["type"] == message["type"]


@pytest.mark.parametrize("case,message,words", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_each_malformed_raft_message_is_refused(case: str, message: object, words: str) -> None:
    """A message pysyncobj would index unchecked is refused with a ProtocolError naming what
    is wrong (the connection is then dropped), before it reaches pysyncobj."""
    with pytest.raises(ProtocolError, match=words):
        validate_message(message, CMD_MAX)


def test_undecodable_and_ext_typed_payloads_are_refused() -> None:
    """The codec takes no ext types (pickle's way in) and no garbage."""
    with pytest.raises(ProtocolError, match="undecodable"):
        decode_message(b"\xc1", 2**20, CMD_MAX)
    with pytest.raises(ProtocolError, match="undecodable"):
        decode_message(msgpack.packb(msgpack.ExtType(1, b"x")), 2**20, CMD_MAX)


# (case, members, connected, newest round each answered, expected first, expected skipped)
ROUND_CASES = [
    ("§6.4 three members: the one that answered the newest round, the other skipped",
     ["a", "b"], {"a", "b"}, {"a": 3, "b": 7}, ["b"], ["a"]),
    ("§6.4 none answered yet: configuration order",
     ["a", "b"], {"a", "b"}, {}, ["a"], ["b"]),
    ("§6.4 the preferred member is disconnected: the other, nothing skipped",
     ["a", "b"], {"a"}, {"b": 9}, ["a"], []),
    ("§6.4 five members: the two freshest, ties in configuration order",
     ["a", "b", "c", "d"], {"a", "b", "c", "d"}, {"b": 5, "c": 5, "d": 2}, ["b", "c"],
     ["d", "a"]),
    ("§6.4 five members, two connected: both, though they cannot make a majority alone",
     ["a", "b", "c", "d"], {"c", "d"}, {"a": 9}, ["c", "d"], []),
    ("§6.4 a group of one: no member to ask", [], set(), {}, [], []),
]


@pytest.mark.parametrize(("case", "members", "connected", "answered", "first", "skipped"),
                         ROUND_CASES, ids=[c[0] for c in ROUND_CASES])
def test_6_4_round_members(case: str, members: list[str], connected: set[str],
                           answered: dict[str, int], first: list[str],
                           skipped: list[str]) -> None:
    assert round_members(members, connected, answered) == (first, skipped), case
