"""Conflict policies: pure functions that decide what a write does to a key.

A policy sees the key's current version (or ``None``), the proposed write, and the parameters it
was bound with, and returns :class:`Accept` (with the value to store), :class:`Reject` (with a
reason), or :class:`Defer` (the ``vote`` policy: hold the edit until enough agents approve).
Policies run inside the replicated state machine on every replica, so they must be deterministic
functions of their arguments: no clock, randomness, I/O or global state. This module imports
none of those. proofs/z3_checks.py proves their laws by running these very functions on z3
symbolic integers (hence :func:`~consensus.policy_ops.as_int` instead of ``int()``).

Built-in policies (the README's table is generated from the same facts):

========================  =================================================================
``reject-stale``          default. Compare-and-set on ``version``: ``expect_version`` must
                          equal the current version (0 = create only). A write without
                          ``expect_version`` is allowed only to create a missing key.
``last-writer-wins``      log order decides; ``expect_version``, if given, is still checked.
``merge``                 type-aware: objects JSON-merge-patch (RFC 7386), numbers add
                          (counter), ``kind="set"`` lists union, lists append.
``priority``              ``ranks={agent: int}``; a lower rank cannot overwrite a higher
                          rank's value. Equal or higher ranks write (CAS if a version given).
``vote``                  ``k`` distinct approvals (the proposer counts unless
                          ``proposer_approves=False``; ``voters`` may restrict who votes)
                          apply the edit; enough rejections refuse it; decided once.
========================  =================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from quorumboard.consensus.core.model import INT_MAX, INT_MIN, Value, canonical_bytes
from quorumboard.consensus.core.policy_ops import as_int
from quorumboard.consensus.errors import UnknownPolicy

__all__ = [
    "BUILTIN",
    "DEFAULT_POLICY",
    "Accept",
    "Current",
    "Decision",
    "Defer",
    "PolicyDef",
    "PolicyRegistry",
    "Reject",
    "Write",
    "canonical_bytes",
    "merge_patch",
    "register_policy",
    "registry",
    "tally",
]

DEFAULT_POLICY = "reject-stale"


@dataclass(frozen=True, slots=True)
class Current:
    """The key's committed state as a policy sees it."""

    value: Value
    version: int
    author: str


@dataclass(frozen=True, slots=True)
class Write:
    """A proposed edit. ``op`` is ``put`` or ``delete`` (``value`` is None for delete)."""

    op: Literal["put", "delete"]
    value: Value
    author: str
    expect_version: int | None


@dataclass(frozen=True, slots=True)
class Accept:
    """Store ``value`` (ignored for deletes); ``decision`` is recorded in the audit history."""

    value: Value
    decision: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the edit. ``stale`` marks a version mismatch (raised as ``StaleVersion``)."""

    reason: str
    message: str
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Defer:
    """Hold the edit as a pending proposal that needs ``k`` approvals (vote policy)."""

    k: int
    decision: str


Decision: TypeAlias = Accept | Reject | Defer
PolicyFn: TypeAlias = Callable[[Current | None, Write, Mapping[str, Any]], Decision]
ParamsCheck: TypeAlias = Callable[[Mapping[str, Any]], None]


def _type_name(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _version_check(current: Current | None, write: Write) -> Reject | None:
    """The compare-and-set rule shared by every policy that honours ``expect_version``."""
    if write.expect_version is None:
        return None
    have = current.version if current is not None else 0
    if write.expect_version != have:
        return Reject(
            "version-mismatch",
            f"expected version {write.expect_version}, key is at version {have}",
            stale=True,
        )
    return None


# ------------------------------------------------------------------------------ built-ins


def reject_stale(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
    mismatch = _version_check(current, write)
    if mismatch is not None:
        return mismatch
    if write.expect_version is None and current is not None:
        return Reject(
            "blind-write",
            f"key exists at version {current.version}; a write without expect_version "
            "could overwrite an edit this agent never saw",
            stale=True,
        )
    if write.op == "delete":
        return Accept(None, "delete: version matched")
    return Accept(write.value, "create" if current is None else "version matched")


def last_writer_wins(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
    mismatch = _version_check(current, write)
    if mismatch is not None:
        return mismatch
    return Accept(write.value, "log order")


def merge_patch(target: Value, patch: Value) -> Value:
    """RFC 7386 JSON merge-patch: objects merge recursively, ``null`` removes a member."""
    if not isinstance(patch, dict):
        return patch
    result: dict[str, Value] = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


_MERGE_KINDS = ("auto", "patch", "counter", "set", "list")


def _merge_kind(params: Mapping[str, Any], value: Value) -> str:
    kind = str(params.get("kind", "auto"))
    if kind != "auto":
        return kind
    if isinstance(value, dict):
        return "patch"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "counter"
    if isinstance(value, list):
        return "list"
    return "none"


def _as_set(items: list[Value]) -> list[Value]:
    unique = {canonical_bytes(v): v for v in items}
    return [unique[b] for b in sorted(unique)]


def merge(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
    mismatch = _version_check(current, write)
    if mismatch is not None:
        return mismatch
    if write.op == "delete":
        return Accept(None, "delete")
    kind = _merge_kind(params, write.value)
    value = write.value
    base = current.value if current is not None else None
    if kind == "none":
        return Reject("unmergeable", f"merge cannot combine a {_type_name(value)} value")
    if kind == "patch":
        if not isinstance(value, dict):
            return Reject("type-mismatch", f"merge-patch needs an object, got {_type_name(value)}")
        if base is not None and not isinstance(base, dict):
            return Reject("type-mismatch", f"key holds a {_type_name(base)}, patch is an object")
        return Accept(merge_patch(base, value), "merge-patch")
    if kind == "counter":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Reject(
                "type-mismatch", f"counter delta must be a number, got {_type_name(value)}"
            )
        if base is None:
            base = 0
        if isinstance(base, bool) or not isinstance(base, (int, float)):
            return Reject("type-mismatch", f"key holds a {_type_name(base)}, delta is a number")
        total = base + value
        if isinstance(total, int) and not INT_MIN <= total <= INT_MAX:
            return Reject("overflow", "counter would leave the signed 64-bit range")
        return Accept(total, f"counter {value:+}")
    if not isinstance(value, list):
        return Reject("type-mismatch", f"{kind} merge needs a list, got {_type_name(value)}")
    if base is not None and not isinstance(base, list):
        return Reject("type-mismatch", f"key holds a {_type_name(base)}, write is a list")
    items = list(base or [])
    if kind == "set":
        return Accept(_as_set(items + value), f"set union of {len(value)}")
    return Accept(items + value, f"list append of {len(value)}")


def _check_merge(params: Mapping[str, Any]) -> None:
    _only(params, {"kind"}, "merge")
    if params.get("kind", "auto") not in _MERGE_KINDS:
        raise UnknownPolicy(f"merge kind must be one of {', '.join(_MERGE_KINDS)}")


def _rank(params: Mapping[str, Any], agent: str) -> int:
    ranks = params.get("ranks", {})
    return as_int(ranks.get(agent, params.get("default_rank", 0)))


def priority(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
    mismatch = _version_check(current, write)
    if mismatch is not None:
        return mismatch
    if current is not None:
        mine, theirs = _rank(params, write.author), _rank(params, current.author)
        if mine < theirs:
            return Reject(
                "lower-rank",
                f"{write.author} (rank {mine}) cannot overwrite {current.author} (rank {theirs})",
            )
    return Accept(write.value, f"rank {_rank(params, write.author)}")


def _check_priority(params: Mapping[str, Any]) -> None:
    _only(params, {"ranks", "default_rank"}, "priority")
    ranks = params.get("ranks", {})
    if not isinstance(ranks, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in ranks.values()
    ):
        raise UnknownPolicy("priority needs ranks={agent: int}")
    default = params.get("default_rank", 0)
    if isinstance(default, bool) or not isinstance(default, int):
        raise UnknownPolicy("priority default_rank must be an int")


def vote(current: Current | None, write: Write, params: Mapping[str, Any]) -> Decision:
    mismatch = _version_check(current, write)
    if mismatch is not None:
        return mismatch
    voters = params.get("voters")
    if voters is not None and write.author not in voters and params.get("proposer_approves", True):
        return Reject("not-a-voter", f"{write.author} is not among the voters of this key")
    return Defer(as_int(params.get("k", 2)), "pending votes")


def _check_vote(params: Mapping[str, Any]) -> None:
    _only(params, {"k", "voters", "proposer_approves"}, "vote")
    k = params.get("k", 2)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UnknownPolicy("vote needs k >= 1")
    voters = params.get("voters")
    if voters is not None:
        if not isinstance(voters, list) or not all(isinstance(v, str) for v in voters):
            raise UnknownPolicy("vote voters must be a list of agent names")
        if len(set(voters)) < k:
            raise UnknownPolicy(f"vote k={k} can never be reached by {len(set(voters))} voters")
    if not isinstance(params.get("proposer_approves", True), bool):
        raise UnknownPolicy("vote proposer_approves must be a boolean")


def tally(
    approvals: list[str], rejections: list[str], params: Mapping[str, Any]
) -> Literal["pending", "approved", "rejected"]:
    """Decide a vote from distinct approvals/rejections: approved at ``k`` approvals; rejected
    once ``k`` can no longer be reached (with a voter list) or at ``k`` rejections (without)."""
    k = as_int(params.get("k", 2))
    if len(approvals) >= k:
        return "approved"
    voters = params.get("voters")
    if voters is not None:
        if len(set(voters)) - len(rejections) < k:
            return "rejected"
    elif len(rejections) >= k:
        return "rejected"
    return "pending"


def _only(params: Mapping[str, Any], allowed: set[str], name: str) -> None:
    extra = set(params) - allowed
    if extra:
        raise UnknownPolicy(
            f"policy {name} does not take parameter(s) {', '.join(sorted(extra))}; "
            f"it takes {', '.join(sorted(allowed)) or 'none'}"
        )


def _no_params(name: str) -> ParamsCheck:
    def check(params: Mapping[str, Any]) -> None:
        _only(params, set(), name)

    return check


# ------------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class PolicyDef:
    """A named policy: its decision function, parameter check, and version.

    The version of a custom policy is what replicas compare before a prefix may be bound to
    it: bump it whenever the function's behaviour changes."""

    name: str
    fn: PolicyFn
    check_params: ParamsCheck
    version: str = "builtin"
    builtin: bool = True


BUILTIN: dict[str, PolicyDef] = {
    "reject-stale": PolicyDef("reject-stale", reject_stale, _no_params("reject-stale")),
    "last-writer-wins": PolicyDef(
        "last-writer-wins", last_writer_wins, _no_params("last-writer-wins")
    ),
    "merge": PolicyDef("merge", merge, _check_merge),
    "priority": PolicyDef("priority", priority, _check_priority),
    "vote": PolicyDef("vote", vote, _check_vote),
}


@dataclass(slots=True)
class PolicyRegistry:
    """Built-ins plus custom policies registered by name in this process."""

    custom: dict[str, PolicyDef] = field(default_factory=dict)

    def get(self, name: str) -> PolicyDef | None:
        return BUILTIN.get(name) or self.custom.get(name)

    def register(
        self,
        name: str,
        fn: PolicyFn,
        *,
        version: str = "1",
        check_params: ParamsCheck | None = None,
    ) -> None:
        if name in BUILTIN:
            raise UnknownPolicy(f"{name!r} is a built-in policy and cannot be replaced")
        if not name or len(name) > 64:
            raise UnknownPolicy("a policy name is 1..64 characters")
        self.custom[name] = PolicyDef(
            name, fn, check_params or (lambda _p: None), version=version, builtin=False
        )

    def custom_versions(self) -> dict[str, str]:
        return {name: d.version for name, d in sorted(self.custom.items())}

    def snapshot(self) -> PolicyRegistry:
        """A copy that later registrations here do not change.

        A replica takes one at start, after importing its policy modules, and applies every
        entry with it: a module imported later (by a policy, a plugin, a test) cannot change
        how this replica decides, so every replica decides with the set it announced."""
        return PolicyRegistry(custom=dict(self.custom))


registry = PolicyRegistry()
"""The default registry, which :func:`register_policy` fills. Nothing applies with it
directly: a replica applies with a :meth:`~PolicyRegistry.snapshot` of it taken at start and
announces that snapshot's custom entries through the log."""


def register_policy(
    name: str,
    fn: PolicyFn,
    *,
    version: str = "1",
    check_params: ParamsCheck | None = None,
) -> None:
    """Register a custom policy ``fn(current, write, params) -> Accept | Reject`` by name.

    It must be registered (same name, same ``version``) in every replica process — load it with
    ``quorumboard serve --policy-module pkg.mod`` or ``LocalCluster(policy_modules=[...])``. The
    board refuses ``set_policy`` to it until every replica announced it, and a replica that meets
    a write under a policy it does not have stops rather than diverge.
    """
    registry.register(name, fn, version=version, check_params=check_params)
