"""Client <-> replica messages, and the msgpack codec every byte goes through.

A connection carries length-prefixed frames (:mod:`consensus.frames`); after the shared-secret
handshake (:mod:`consensus.auth`) each frame is one msgpack map validated into a
:class:`Request` (client to replica) or a :class:`Reply` / :class:`WatchBatch` (replica to
client). Anything that does not validate gets an error reply naming the problem, or a close:
a replica never crashes on bad bytes. Pure: no sockets, threads or clocks.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal, TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from quorumboard.consensus.core.model import (
    KEY_BYTES_MAX,
    VALUE_BYTES_MAX,
    Claim,
    Entry,
    ErrorInfo,
    Event,
    HistoryRecord,
    LeaseInfo,
    LeaseStatus,
    Pending,
    PolicyBinding,
    Proposal,
    Result,
)
from quorumboard.consensus.errors import ProtocolError

__all__ = [
    "BUDGET_S_DEFAULT",
    "BUDGET_S_MAX",
    "CLIENT_FRAME_BYTES_MAX",
    "CancelReq",
    "Failure",
    "ProposeReq",
    "ReadKind",
    "ReadReq",
    "ReplicaStatus",
    "Reply",
    "Request",
    "StatusReq",
    "WatchAckReq",
    "WatchBatch",
    "WatchReq",
    "decode",
    "decode_request",
    "encode",
]

CLIENT_FRAME_BYTES_MAX = VALUE_BYTES_MAX + 64 * 1024 + KEY_BYTES_MAX
"""Largest client frame: one maximal value plus headroom for the envelope."""

REPLY_FRAME_BYTES_MAX = 64 * 2**20
"""Largest frame a client accepts (a ``list`` of many values)."""


class Failure(enum.StrEnum):
    """Why a request got no result: the one failure vocabulary from the Raft layer, through
    group commit and the client endpoint, to the client's single mapping onto exceptions.

    * ``NOT_LEADER``: sent to a follower; nothing applied. Retry at ``leader_hint``.
    * ``UNAVAILABLE``: nothing applied (no quorum, a full queue, a linearizable read whose
      read index was not confirmed in the request's budget). Retry anywhere.
    * ``OUTCOME_UNKNOWN``: the proposal may or may not commit (a leader change, the budget
      ran out while it was in the log). Retry only under the same session and seq.
    * ``INVALID``: the request itself was refused; retrying it fails the same way.
    * ``COMPACTED``: a watch start older than the retained events.
    * ``SLOW_WATCHER``: a watch whose client fell a whole watch buffer behind was cancelled;
      every event before ``resume_revision`` was sent.
    """

    NOT_LEADER = "not_leader"
    UNAVAILABLE = "unavailable"
    OUTCOME_UNKNOWN = "outcome_unknown"
    INVALID = "invalid"
    COMPACTED = "compacted"
    SLOW_WATCHER = "slow_watcher"


BUDGET_S_DEFAULT = 5.0
BUDGET_S_MAX = 10.0
"""A request's time budget: how long the client will wait for this attempt, in *relative*
seconds (an absolute deadline would break under clock skew between client and replica, which
the chaos clock faults inject). The replica answers within it, ``OUTCOME_UNKNOWN`` or
``UNAVAILABLE`` if nothing better; it is the only timeout a caller sees. At most the Raft
node's bound on a pending proposal (``RaftSettings.propose_timeout_s``), so that bound never
answers first."""
Budget = Annotated[float, Field(gt=0, le=BUDGET_S_MAX)]


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProposeReq(_Msg):
    kind: Literal["propose"] = "propose"
    id: int
    proposal: Proposal
    budget_s: Budget = BUDGET_S_DEFAULT


ReadKind = Literal["get", "list", "history", "pending", "lease", "list_many", "claims",
                   "policies", "leases"]
PREFIXES_PER_READ_MAX = 64


class ReadReq(_Msg):
    """A read. Linearizable unless ``stale``: the replica first gets a read index confirmed by
    the leader's heartbeat round (ReadIndex, Raft thesis §6.4) and applies up to it.

    ``claims`` lists the claims under the prefix ``key`` (after ``start_after``); ``policies``
    every policy binding; ``leases`` the leases with an id above ``lease``, with the time left
    on the leader's clock, so a linearizable ``leases`` read is answered by the leader only
    (``NOT_LEADER`` elsewhere, like a proposal)."""

    kind: Literal["read"] = "read"
    id: int
    what: ReadKind
    key: str = Field(default="", max_length=KEY_BYTES_MAX)
    lease: int = 0
    limit: int = Field(default=10_000, ge=1, le=100_000)
    start_after: str = Field(default="", max_length=KEY_BYTES_MAX)
    stale: bool = False
    budget_s: Budget = BUDGET_S_DEFAULT
    prefixes: list[Annotated[str, Field(max_length=KEY_BYTES_MAX)]] = Field(
        default_factory=list, max_length=PREFIXES_PER_READ_MAX)
    """``list_many``: every entry under any of these, in one reply, at one revision."""


class WatchReq(_Msg):
    kind: Literal["watch"] = "watch"
    id: int
    prefix: str = Field(default="", max_length=KEY_BYTES_MAX)
    start_revision: int | None = Field(default=None, ge=0)


class CancelReq(_Msg):
    kind: Literal["cancel"] = "cancel"
    id: int
    watch: int


class WatchAckReq(_Msg):
    """The client consumed ``consumed_bytes`` more of watch ``watch``'s batches (the sum of
    their ``size_bytes``), freeing that much of the watch's buffer on the replica. Not
    answered: acknowledgements are sent a quarter of the buffer at a time, in the background
    of the stream."""

    kind: Literal["ack"] = "ack"
    id: int = 0
    watch: int
    consumed_bytes: int = Field(ge=0)


class StatusReq(_Msg):
    kind: Literal["status"] = "status"
    id: int
    digest: bool = False


Request = Annotated[
    ProposeReq | ReadReq | WatchReq | CancelReq | StatusReq | WatchAckReq,
    Field(discriminator="kind")
]
_REQUEST: TypeAdapter[Request] = TypeAdapter(Request)


class ReplicaStatus(_Msg):
    """One replica's view of itself and the cluster (``LocalCluster.status()``)."""

    address: str
    client_address: str
    role: str
    leader: str | None = None
    leader_client: str | None = None
    term: int
    commit_index: int
    last_applied: int
    revision: int
    keys: int
    digest: str = ""
    has_quorum: bool
    batches: int = 0
    batched_proposals: int = 0
    open_files_limit: int = 0
    """This process's soft limit on open files (``RLIMIT_NOFILE``), raised toward the hard
    limit at start: each client connection holds one."""
    connections_max: int = 0
    """The replica's cap on client connections (``connections_max`` in its config)."""
    client_connections: int = 0
    """Client connections open now (counted against ``connections_max``)."""
    watch_buffer_bytes: int = 0
    """The most of one watch's events sent and not yet consumed before the watch is
    cancelled as too slow (``watch_buffer_bytes`` in the replica's config)."""
    slow_watches_cancelled: int = 0
    """Watches cancelled since start because their client fell a whole buffer behind."""
    client_watches: int = 0
    """Watches this replica serves now, over all its client connections (followers serve
    watches too: a client spreads them over the replicas)."""
    space_bytes: int = 0
    """Live bytes counted against the space quota: every key plus its value and every open
    proposal's value (the same on every replica at the same revision)."""
    space_quota_bytes: int = 0
    """``Limits.space_quota_bytes``: a write past it is refused (``SpaceQuotaExceeded``)."""
    poll_spins: int = 0
    """Times since start the replica's loop polled instead of sleeping, serving a lone client
    (``poll_spin_us`` in its config; consensus/replica/polling.py)."""
    poll_spin_hits: int = 0
    """Of those, polls that found a message before their time was up."""
    poll_spins_preempted: int = 0
    """Polls that lost their core to another task (each stops polling for 50 ms)."""


class Reply(_Msg):
    """Answer to one request. ``wire_error`` set means the request got no result
    (:class:`Failure`); ``error`` is a read's refusal (``not_found``, ``invalid``) — both
    distinct from a committed :class:`Result` carrying a policy's refusal."""

    id: int
    error: ErrorInfo | None = None
    wire_error: Failure | None = None
    message: str = ""
    leader_hint: str | None = None
    compact_revision: int = 0
    result: Result | None = None
    entry: Entry | None = None
    entries: list[Entry] | None = None
    history: list[HistoryRecord] | None = None
    pending: list[Pending] | None = None
    lease: LeaseInfo | None = None
    claims: list[Claim] | None = None
    policies: list[PolicyBinding] | None = None
    leases: list[LeaseStatus] | None = None
    status: ReplicaStatus | None = None
    revision: int = 0
    more: bool = False
    resume_revision: int | None = None
    """``SLOW_WATCHER``: the revision to watch from again (every event before it was sent)."""
    watch_buffer_bytes: int | None = None
    """A watch's first reply: the watch's buffer on the replica, so the client knows how often
    to acknowledge (:class:`WatchAckReq`). ``None``: the replica wants no acknowledgements.
    (Both fields stay off the wire when unset: every put's reply goes through this class.)"""


WATCHES_PER_BATCH_MAX = 65_536


class WatchBatch(_Msg):
    """Events of whole revisions for watch ``id``; ``through`` is the revision the replica has
    scanned up to, so a client resumes from ``through + 1`` after a reconnect. ``size_bytes``
    is what the batch counts against the watch's buffer until the client acknowledges it."""

    id: int
    watch: Literal[True] = True
    events: list[Event]
    through: int
    size_bytes: int = 0
    also: list[int] | None = Field(default=None, max_length=WATCHES_PER_BATCH_MAX)
    """More watches of the connection this same batch is for (each counts ``size_bytes``):
    the Boards sharing a connection that watch one prefix get one frame per revision."""


def encode(message: BaseModel, stamp: dict[str, Any] | None = None) -> bytes:
    """Model -> msgpack bytes, leaving out fields that are ``None``.

    Every field that may be ``None`` defaults to ``None`` (tests/test_model.py checks), so the
    decoder restores exactly what was left out; a reply or a log entry shrinks by about half
    and decodes in two thirds of the time. JSON nulls inside values are kept. ``stamp``:
    top-level fields encoded in place of the model's (a client attempt's id and budget)."""
    fields = message.model_dump(mode="python", exclude_none=True)
    if stamp:
        fields.update(stamp)
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def _unpack(data: bytes, size_max: int) -> Any:
    if len(data) > size_max:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {size_max}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"not a msgpack message: {type(exc).__name__}") from None


M = TypeVar("M", bound=BaseModel)


def decode(data: bytes, model: type[M], size_max: int = REPLY_FRAME_BYTES_MAX) -> M:
    """msgpack bytes -> validated ``model``; :class:`ProtocolError` saying what was wrong."""
    obj = _unpack(data, size_max)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None


def decode_request(data: bytes) -> Request:
    """A client frame -> a validated :data:`Request`, or :class:`ProtocolError`."""
    obj = _unpack(data, CLIENT_FRAME_BYTES_MAX)
    try:
        return _REQUEST.validate_python(obj)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None
    except Exception as exc:  # key/value validators raise BoardError subclasses
        raise ProtocolError(str(exc)) from None


def request_id(data: bytes) -> int:
    """Best effort: the ``id`` of an invalid request, so the error reply can be matched."""
    try:
        obj = msgpack.unpackb(data, raw=False)
        rid = obj.get("id", 0) if isinstance(obj, dict) else 0
        return rid if isinstance(rid, int) and not isinstance(rid, bool) else 0
    except Exception:
        return 0


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"invalid message at {where or 'top level'}: {first['msg']}"
