"""One error tree for everything the blackboard can refuse or fail to do.

Every error a caller can see derives from :class:`BoardError`. Each class says *when* it is
raised and *whether retrying the same call is safe*, because that is what an agent loop needs to
decide next. Errors that mean "the cluster said no" (conflicts, policy rejections, bad input) are
final for that exact request; errors that mean "we could not find out" (unavailable, unknown
outcome) may be retried, and retries through the same :class:`~consensus.client.Board` are
exactly-once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quorumboard.consensus.core.model import Entry

__all__ = [
    "AuthError",
    "BoardError",
    "ClaimHeld",
    "Conflict",
    "CorruptData",
    "FencedOut",
    "FrameTooLarge",
    "InvalidCommand",
    "InvalidKey",
    "InvalidValue",
    "InvariantViolation",
    "NotFound",
    "OutcomeUnknown",
    "PolicyRejected",
    "ProtocolError",
    "RevisionCompacted",
    "SessionExpired",
    "SpaceQuotaExceeded",
    "StaleVersion",
    "TooManyConnections",
    "Unavailable",
    "UnknownPolicy",
    "WatchCancelled",
]


class BoardError(Exception):
    """Root of every quorumboard error. Catch this to handle any refusal or failure."""


# --- bad input: raised before anything is sent; retrying the same input fails the same way ----


class InvalidCommand(BoardError):
    """A request was malformed (wrong field, wrong type, out of bounds).

    Raised by the client before sending, or by a replica that received it. Not retryable as is.
    """


class InvalidKey(InvalidCommand):
    """A key is empty, too long, not ``/``-separated segments, or has a forbidden character."""


class InvalidValue(InvalidCommand):
    """A value is not JSON-like (dict/list/str/int/float/bool/None) or exceeds the size bound."""


class UnknownPolicy(InvalidCommand):
    """``set_policy`` named a policy that is not registered (on some replica, for custom ones),
    or gave it parameters it does not accept. Nothing was changed."""


# --- the cluster said no: committed decision, final for this request ------------------------


class Conflict(BoardError):
    """The state machine refused a write because of what is already on the board.

    ``current`` is the entry as it was when the refusal was decided (``None`` if the key did not
    exist), so the caller can merge and retry with ``expect_version=current.version``. Retrying
    the *same* request fails the same way; nothing was overwritten.
    """

    def __init__(
        self,
        message: str,
        *,
        current: Entry | None = None,
        policy: str = "",
        reason: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.current = current
        self.policy = policy
        self.reason = reason
        self.detail: dict[str, Any] = detail or {}


class StaleVersion(Conflict):
    """``expect_version`` did not match the key's version (reject-stale's compare-and-set)."""


class PolicyRejected(Conflict):
    """A key's conflict policy (priority, vote, merge type rules, a custom one) refused the edit."""


class ClaimHeld(Conflict):
    """``claim`` found the key claimed by another live owner; ``current`` shows the holder."""


class FencedOut(Conflict):
    """A write carried a fencing token that is no longer the key's current claim.

    The claim expired or was taken over: the writer must stop acting as the owner.
    """


class NotFound(BoardError):
    """The key, lease or pending proposal does not exist (at a linearizable read, if not stale)."""


class SpaceQuotaExceeded(BoardError):
    """A write would take the board past its space quota (``Limits.space_quota_bytes``: UTF-8
    bytes of every key plus msgpack bytes of its value and of every open proposal's value).

    The refusal is committed, so every replica refuses the same write (etcd's space-quota
    alarm); nothing was written. Deletes, lease revokes and expiries still apply and free space,
    as does overwriting a key with a smaller value: retry once space is freed (CLI exit code
    10). ``quota_bytes`` is the quota, ``used_bytes`` what was in use when it was refused.
    """

    def __init__(self, message: str, *, quota_bytes: int = 0, used_bytes: int = 0) -> None:
        super().__init__(message)
        self.quota_bytes = quota_bytes
        self.used_bytes = used_bytes


class RevisionCompacted(BoardError):
    """``watch``/``history`` asked for a revision older than what the board still retains.

    ``compact_revision`` is the oldest revision still available: resynchronise by reading the
    current state (``list``) and watch from its revision + 1.
    """

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class WatchCancelled(BoardError):
    """The replica cancelled a watch whose client fell a whole watch buffer behind.

    A replica keeps at most ``watch_buffer_bytes`` (its config; 8 MiB by default) of a watch's
    events sent but not yet consumed by the iterator; a watcher that falls further behind is
    cancelled rather than let hold memory or a connection (what etcd does to slow watchers).
    Every event before ``resume_revision`` was delivered first: watch again from
    ``resume_revision`` (``board.watch(prefix, start_revision=exc.resume_revision)``) and the
    stream continues without a gap or a duplicate, or raises :class:`RevisionCompacted` if the
    board has moved past it meanwhile.
    """

    def __init__(self, message: str, *, resume_revision: int) -> None:
        super().__init__(message)
        self.resume_revision = resume_revision


class SessionExpired(BoardError):
    """The replicated session table no longer knows this client session (evicted as least
    recently used).

    The client opens a new session by itself and re-sends a command none of whose attempts can
    have applied, so this is raised only when one may have: an attempt of this call, or of the
    identical earlier call whose :class:`OutcomeUnknown` this call retries. Its result was kept
    in the evicted session, so the outcome cannot be learned and a blind retry could apply it
    twice: **not safe to retry blindly** — read the board, then decide (the next call is sent as
    a new command)."""


# --- we could not find out: retry is safe through the same Board (exactly-once) -------------


class Unavailable(BoardError):
    """No replica could commit the request in time (no leader, no quorum, all endpoints down).

    The request was not applied *or* its outcome was never proposed; :class:`Board` retries with
    the same session sequence number, so a retry can never apply twice.
    """


class OutcomeUnknown(Unavailable):
    """The request may or may not have committed (timeout after proposing, connection lost).

    Retrying through the same ``Board`` is safe: the session table returns the original result
    if it did commit. Jepsen calls this an *info* outcome.
    """


class TooManyConnections(Unavailable):
    """A replica refused the connection because it already serves ``limit`` client connections
    (``connections_max`` in its config): its refusal frame says so in the handshake.

    Nothing was sent. The client raises it once every endpoint refused it, or when the deadline
    ran out with the leader still refusing; until then it tries the other endpoints and backs
    off. Retrying later is safe (a subclass of :class:`Unavailable`); if it persists, raise the
    replicas' ``connections_max`` or share connections (fewer ``Board`` objects or watches).
    """

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


# --- wire and storage ------------------------------------------------------------------------


class ProtocolError(BoardError):
    """Bytes on a connection did not decode into a valid frame or message; the peer is dropped."""


class FrameTooLarge(ProtocolError):
    """A length prefix announced more bytes than the bound allows; refused before buffering."""


class AuthError(ProtocolError):
    """A peer did not prove knowledge of the shared secret, or a frame's tag did not verify.

    ``secret_mismatch`` is true when the two sides' secrets differ (or only one has one): the
    client raises it once every endpoint refused it that way, since no retry can succeed (CLI
    exit code 9). Any other handshake failure (another service on the port, a malformed hello)
    only rules that endpoint out.
    """

    def __init__(self, message: str, *, secret_mismatch: bool = False) -> None:
        super().__init__(message)
        self.secret_mismatch = secret_mismatch


class CorruptData(BoardError):
    """A journal, snapshot or meta file failed its checksum or did not decode.

    Raised at replica start: the replica refuses to serve rather than propose corrupt state.
    Move the data dir aside and restart the replica to rebuild it from its peers.
    """


class InvariantViolation(BoardError):
    """An internal invariant did not hold: a bug in quorumboard, never the caller's fault."""
