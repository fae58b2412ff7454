"""The validated records of the blackboard: what is stored, proposed, returned and streamed.

Every message that crosses a process boundary (client wire, raft log, snapshot) is one of these
pydantic models; bytes become models only through :mod:`consensus.codec`. This module is pure:
no sockets, threads, clocks, randomness or I/O.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Any, Literal, TypeAlias

import msgpack
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from quorumboard.consensus.errors import InvalidKey, InvalidValue

__all__ = [
    "KEY_BYTES_MAX",
    "VALUE_BYTES_MAX",
    "VALUE_DEPTH_MAX",
    "AnnouncePolicies",
    "Claim",
    "ClaimCmd",
    "CloseSession",
    "Command",
    "DeleteCmd",
    "Entry",
    "ErrorInfo",
    "Event",
    "ExpireLease",
    "FenceRef",
    "GrantCmd",
    "HistoryRecord",
    "KeepAliveCmd",
    "LeaseInfo",
    "LeaseStatus",
    "Listing",
    "OpenSession",
    "Pending",
    "PolicyBinding",
    "Proposal",
    "PutCmd",
    "Result",
    "RevokeCmd",
    "SetPolicyCmd",
    "Value",
    "VoteCmd",
    "WithdrawCmd",
    "canonical_bytes",
    "check_key",
    "check_prefix",
    "check_value",
    "value_bytes",
    "value_sha256",
]

KEY_BYTES_MAX = 512
"""Longest key, in UTF-8 bytes. Keys are index entries kept in memory on every replica."""

VALUE_BYTES_MAX = 1 << 20
"""Largest value, as msgpack bytes (1 MiB; etcd allows 1.5 MiB per request)."""

VALUE_DEPTH_MAX = 32
"""Deepest nesting of lists/objects: bounds recursion in validation, merge and digest."""

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1

Value: TypeAlias = Any
"""JSON-like: dict[str, Value] | list[Value] | str | int | float | bool | None."""

_FORBIDDEN_KEY_CHARS = frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def _utf8_size(text: str, what: str, error: type[InvalidKey] | type[InvalidValue]) -> int:
    """UTF-8 length of ``text``; lone surrogates (valid ``str``, not encodable) are refused."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise error(f"{what} is not valid UTF-8 (character {exc.start}: lone surrogate)") from None


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid key, else raise :class:`InvalidKey` saying why.

    A key is 1..512 UTF-8 bytes of ``/``-separated non-empty segments (no leading, trailing or
    doubled ``/``), without control characters, and no segment is ``.`` or ``..``.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidKey("key is empty")
    size = _utf8_size(key, "key", InvalidKey)
    if size > KEY_BYTES_MAX:
        raise InvalidKey(f"key is {size} bytes, longer than {KEY_BYTES_MAX}")
    bad = _FORBIDDEN_KEY_CHARS.intersection(key)
    if bad:
        raise InvalidKey(f"key {key!r} contains control character {sorted(bad)[0]!r}")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(f"key {key!r} has an empty segment (leading, trailing or '//')")
        if segment in (".", ".."):
            raise InvalidKey(f"key {key!r} has a '{segment}' segment")
    return key


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if usable for list/watch/set_policy: any string prefix of a valid key."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a string, got {type(prefix).__name__}")
    size = _utf8_size(prefix, "prefix", InvalidKey)
    if size > KEY_BYTES_MAX:
        raise InvalidKey(f"prefix is {size} bytes, longer than {KEY_BYTES_MAX}")
    bad = _FORBIDDEN_KEY_CHARS.intersection(prefix)
    if bad:
        raise InvalidKey(f"prefix {prefix!r} contains control character {sorted(bad)[0]!r}")
    if prefix.startswith("/") or "//" in prefix:
        raise InvalidKey(f"prefix {prefix!r} can match no key (leading or doubled '/')")
    return prefix


def _check_value_shape(value: object, depth: int, path: str) -> None:
    if depth > VALUE_DEPTH_MAX:
        raise InvalidValue(f"value nests deeper than {VALUE_DEPTH_MAX} at {path}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _utf8_size(value, f"string at {path}", InvalidValue)
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidValue(f"integer at {path} is outside the signed 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"number at {path} is not finite ({value!r}); JSON has no NaN/inf")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value_shape(item, depth + 1, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InvalidValue(f"object key at {path} is {type(k).__name__}, must be a string")
            _utf8_size(k, f"object key at {path}", InvalidValue)
            _check_value_shape(item, depth + 1, f"{path}.{k}")
        return
    raise InvalidValue(
        f"value at {path} has type {type(value).__name__}; "
        "allowed: dict, list, str, int, float, bool, None"
    )


def check_value(value: object) -> Value:
    """Return ``value`` if JSON-like and at most :data:`VALUE_BYTES_MAX` encoded, else raise
    :class:`InvalidValue` naming the offending path."""
    _check_value_shape(value, 0, "$")
    size = value_bytes(value)
    if size > VALUE_BYTES_MAX:
        raise InvalidValue(f"value is {size} bytes encoded, larger than {VALUE_BYTES_MAX}")
    return value


def value_bytes(value: Value) -> int:
    """A value's size as the board counts it (quota, retained-value bounds): its msgpack bytes.

    A function of the value alone, so every replica counts a write the same. Scalars are sized
    by msgpack's rules without encoding them (a replica installing a snapshot sizes every key:
    packing each would be a third of the install); containers are packed."""
    kind = type(value)
    if kind is str:
        n = len(value) if value.isascii() else len(value.encode("utf-8"))
        return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)
    if kind is int:
        if -32 <= value < 128:
            return 1
        if value > 0:
            return 2 if value < 256 else 3 if value < 65536 else 5 if value < 2**32 else 9
        return 2 if value >= -128 else 3 if value >= -32768 else 5 if value >= -(2**31) else 9
    if value is None or kind is bool:
        return 1
    if kind is float:
        return 9
    return len(msgpack.packb(value, use_bin_type=True))


def canonical_bytes(value: Value) -> bytes:
    """Deterministic msgpack encoding (object keys sorted) used for ordering and digests."""
    data: bytes = msgpack.packb(_canonical(value), use_bin_type=True)
    return data


def _canonical(value: Value) -> Value:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def value_sha256(value: Value) -> str:
    """SHA-256 (hex) of a value's canonical encoding: what an event or audit record keeps of a
    value dropped past the retained-value bound, so a holder of a copy can check it."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


Key = Annotated[str, Field(min_length=1, max_length=KEY_BYTES_MAX), AfterValidator(check_key)]
"""A key in a command: every rule of :func:`check_key` (raises :class:`InvalidKey`)."""
Prefix = Annotated[str, AfterValidator(check_prefix)]
JsonValue = Annotated[Value, AfterValidator(check_value)]
"""A value in a command: every rule of :func:`check_value` (raises :class:`InvalidValue`)."""
Agent = Annotated[str, Field(min_length=1, max_length=128)]
Seconds = Annotated[float, Field(gt=0, le=86_400 * 30)]


# ---------------------------------------------------------------- records returned to callers


class Entry(_Model):
    """One key's current version, as committed.

    ``revision`` is the board revision at which this view was produced (equal to
    ``mod_revision`` in a write's result; possibly newer in a read), so a reader knows how fresh
    its view is. ``version`` counts puts since the key was (re)created, starting at 1.
    """

    key: str
    value: Value = None
    version: int
    revision: int
    author: str
    create_revision: int
    mod_revision: int
    lease: int | None = None


class Listing(_Model):
    """The entries under several prefixes, read together at one board revision (see
    :meth:`Board.list_many`): a view rebuilt from it and then watched from ``revision + 1``
    misses no change and sees none twice."""

    revision: int
    entries: list[Entry]

    def under(self, prefix: str) -> list[Entry]:
        """The entries whose key starts with ``prefix``, in key order."""
        return [e for e in self.entries if e.key.startswith(prefix)]


class Claim(_Model):
    """Exclusive ownership of ``key`` by ``owner`` while lease ``lease`` lives.

    ``fence`` strictly increases with every new owner of any claim on the board: pass the claim
    as ``fence=`` to writes, and the state machine refuses them once this claim is not current.
    """

    key: str
    owner: str
    fence: int
    lease: int
    ttl: float


class FenceRef(_Model):
    """The part of a :class:`Claim` a fenced write carries: which claim, which token."""

    key: Key
    fence: int


class LeaseInfo(_Model):
    """A lease: keys attached to it are deleted when it expires or is revoked."""

    id: int
    ttl: float
    keys: list[str] = Field(default_factory=list)
    refreshes: int = 0


class LeaseStatus(_Model):
    """A lease as the leader counts it now (``Board.leases()``).

    ``time_left_s`` is how long until the leader proposes the lease's expiry if no keepalive
    commits first, on the leader's own clock; ``None`` when the replica that answered does
    not lead (only a stale read gets that). Like the TTL it is a minimum, not a promise: a new
    leader restarts every countdown. ``claims`` are the keys claimed under this lease."""

    id: int
    owner: str
    ttl: float
    time_left_s: float | None = None
    keys: list[str] = Field(default_factory=list)
    claims: list[str] = Field(default_factory=list)
    refreshes: int = 0


class Pending(_Model):
    """An edit waiting for votes under the ``vote`` policy (nothing is written until decided)."""

    id: int
    key: str
    value: Value = None
    author: str
    base_version: int
    approvals: list[str]
    rejections: list[str]
    status: Literal["pending", "approved", "rejected", "withdrawn", "superseded"]
    k: int


class Event(_Model):
    """A committed change, as streamed by ``watch`` in revision order.

    ``cause`` says why: ``put``/``delete`` by an agent, ``lease-expired``, ``revoked``,
    ``vote-approved``. For a delete, ``entry`` is the last version's metadata (key, version,
    author, revisions, lease) with ``value`` omitted: the watcher saw the value in its put event,
    and leaving it out bounds the size of a revision that deletes many keys at once.
    """

    revision: int
    kind: Literal["put", "delete"]
    key: str
    entry: Entry
    cause: str = ""
    value_sha256: str | None = None
    """Set when the board no longer holds this put's value: the retained event log keeps at most
    ``Limits.events_value_bytes_max`` bytes of values, and an older put event keeps only its
    metadata and this SHA-256 of the value (:func:`value_sha256`), with ``entry.value`` None.
    ``None`` means ``entry.value`` is the value as written."""

    @property
    def value_dropped(self) -> bool:
        """Whether the value was dropped from the retained log (see ``value_sha256``)."""
        return self.value_sha256 is not None


class HistoryRecord(_Model):
    """One audit line of ``history(key)``: an applied version or a refused attempt, with the
    policy that decided it and why."""

    revision: int
    key: str
    outcome: Literal["put", "delete", "rejected", "pending"]
    version: int
    author: str
    value: Value = None
    policy: str
    decision: str
    value_sha256: str | None = None
    """Set when the audit trail no longer holds this record's value: it keeps at most
    ``Limits.audit_value_bytes_max`` bytes of values, and an older record keeps its metadata and
    this SHA-256 of the value (:func:`value_sha256`), with ``value`` None."""

    @property
    def value_dropped(self) -> bool:
        """Whether the value was dropped from the audit trail (see ``value_sha256``)."""
        return self.value_sha256 is not None


class PolicyBinding(_Model):
    """A conflict policy bound to every key starting with ``prefix`` (longest prefix wins)."""

    prefix: str
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


# -------------------------------------------------------------- commands (proposed to the log)


class PutCmd(_Model):
    op: Literal["put"] = "put"
    key: Key
    value: JsonValue = None
    expect_version: int | None = Field(default=None, ge=0)
    lease: int | None = None
    fence: FenceRef | None = None


class DeleteCmd(_Model):
    op: Literal["delete"] = "delete"
    key: Key
    expect_version: int | None = Field(default=None, ge=0)
    fence: FenceRef | None = None


class VoteCmd(_Model):
    op: Literal["vote"] = "vote"
    key: Key
    proposal: int
    approve: bool


class WithdrawCmd(_Model):
    op: Literal["withdraw"] = "withdraw"
    key: Key
    proposal: int


class GrantCmd(_Model):
    op: Literal["grant"] = "grant"
    ttl: Seconds


class KeepAliveCmd(_Model):
    op: Literal["keepalive"] = "keepalive"
    lease: int


class RevokeCmd(_Model):
    op: Literal["revoke"] = "revoke"
    lease: int


class ClaimCmd(_Model):
    op: Literal["claim"] = "claim"
    key: Key
    ttl: Seconds
    value: JsonValue = None


class SetPolicyCmd(_Model):
    op: Literal["set_policy"] = "set_policy"
    prefix: Prefix
    name: Annotated[str, Field(min_length=1, max_length=64)]
    params: Annotated[dict[str, Any], AfterValidator(check_value)] = Field(default_factory=dict)


class OpenSession(_Model):
    op: Literal["open_session"] = "open_session"


class CloseSession(_Model):
    op: Literal["close_session"] = "close_session"


class ExpireLease(_Model):
    """Proposed by the leader when, by its own clock, ``lease`` went ``ttl`` without a refresh.

    Carries the refresh count the leader saw: if a keepalive committed in between, the expiry
    is stale and applies as a no-op. Clients cannot send it (replica-internal)."""

    op: Literal["expire_lease"] = "expire_lease"
    lease: int
    refreshes: int


class AnnouncePolicies(_Model):
    """Proposed by each replica at start: which custom policies (name -> version) it can run.

    ``set_policy`` with a custom name is refused until every member announced that version,
    so no replica ever applies a write under a policy it does not have."""

    op: Literal["announce_policies"] = "announce_policies"
    replica: str
    cluster_size: Annotated[int, Field(ge=1, le=15)]
    policies: dict[str, str]


Command = Annotated[
    PutCmd
    | DeleteCmd
    | VoteCmd
    | WithdrawCmd
    | GrantCmd
    | KeepAliveCmd
    | RevokeCmd
    | ClaimCmd
    | SetPolicyCmd
    | OpenSession
    | CloseSession
    | ExpireLease
    | AnnouncePolicies,
    Field(discriminator="op"),
]

CLIENT_OPS = frozenset(
    {
        "put",
        "delete",
        "vote",
        "withdraw",
        "grant",
        "keepalive",
        "revoke",
        "claim",
        "set_policy",
        "open_session",
        "close_session",
    }
)
"""Ops a client may propose; the rest are proposed by replicas themselves."""


class Proposal(_Model):
    """One log entry: a command with the proposer's identity and exactly-once session fields.

    ``session`` 0 means "no session" (replica-internal commands and ``open_session``).
    ``acked_below``: every ``seq`` below it has had its reply delivered, so the replicated
    session table may forget those results (Raft dissertation §6.3).
    """

    agent: Agent
    session: int = Field(default=0, ge=0)
    seq: int = Field(default=0, ge=0)
    acked_below: int = Field(default=0, ge=0)
    command: Command


# ------------------------------------------------------------------------------ results


ErrorCode = Literal[
    "stale_version",
    "policy_rejected",
    "claim_held",
    "fenced_out",
    "not_found",
    "invalid",
    "unknown_policy",
    "session_expired",
    "space_quota",
    "internal",
]


class ErrorInfo(_Model):
    """Why the state machine refused a command. Maps 1:1 to an error class on the client."""

    code: ErrorCode
    message: str
    policy: str = ""
    reason: str = ""
    current: Entry | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Result(_Model):
    """What applying one proposal produced. Exactly one of the payload fields is set on success;
    ``error`` is set on refusal. ``revision`` is the board revision after applying."""

    revision: int
    error: ErrorInfo | None = None
    entry: Entry | None = None
    claim: Claim | None = None
    lease: LeaseInfo | None = None
    pending: Pending | None = None
    session: int | None = None
    note: str = ""
