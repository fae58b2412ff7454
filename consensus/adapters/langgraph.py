"""LangGraph on the board: a long-term memory store and a checkpointer with one writer per thread.

Install with ``pip install 'quorumboard[langgraph]'``. Both classes sit on the public client
(:class:`~quorumboard.consensus.Board`) only, so everything they write is a Raft-committed board
edit that any other agent can read, watch or audit (``board.history(key)``).

:class:`BoardStore` is a ``langgraph.store.base.BaseStore``. Namespaces are tuples of labels
that may contain ``/`` (a board key's separator): every label becomes one key segment, escaped
reversibly (``_`` + percent-encoding), so a key decodes back to exactly its namespace and item
key. Each item is stored as ``{"value", "created_at", "updated_at"}``; the timestamps are the
*writing process's* UTC wall clock (the replicated state machine has no clock by design), so two
writers with skewed clocks can record an ``updated_at`` that runs backwards: order by the board's
revision (``board.history``) when the order matters.

:class:`BoardCheckpointSaver` is a ``BaseCheckpointSaver`` that passes LangGraph's own
conformance suite at every base capability, and adds what no
LangGraph backend has: one writer per thread. A saver claims a thread on its first write (a
board claim whose lease lapses ``claim_ttl_s`` after the last renewal), renews it on every write,
releases it on :meth:`~BoardCheckpointSaver.release` or :meth:`~BoardCheckpointSaver.close`, and
every write carries the claim's fence, so a worker that lost the thread (stalled past its lease,
taken over) is refused with :class:`~quorumboard.consensus.FencedOut`. On top of that a
checkpoint is accepted only if its parent is the chain's current head (or it has no parent and
this saver has seen the current head: the one writer starting the thread afresh), checked
against the head
the put reads and made atomic by a compare-and-set on its version: a worker that read the thread
before someone else extended it, or retries a refused put, gets
:class:`~quorumboard.consensus.StaleVersion`, even when it shares the claim. Without
``branching=True`` every accepted checkpoint's parent is the one accepted before it; the class
doc says exactly what is guaranteed, for pending writes too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.store.base import (
    NOT_PROVIDED,
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    NotProvided,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    _validate_namespace,
    validate_op_namespace,
)
from langgraph.store.memory import _compare_values, _does_match

from quorumboard.consensus import (
    Board,
    BoardError,
    Claim,
    ClaimHeld,
    Conflict,
    CorruptData,
    Entry,
    FencedOut,
    FenceRef,
    InvalidCommand,
    InvalidKey,
    InvalidValue,
    NotFound,
    PolicyRejected,
    StaleVersion,
    Unavailable,
)
from quorumboard.consensus.core.model import VALUE_BYTES_MAX, check_prefix

_log = structlog.get_logger("quorumboard.adapters.langgraph")

__all__ = ["BoardCheckpointSaver", "BoardStore", "UnsupportedOperation"]

_T = TypeVar("_T")

STORE_POLICY = "last-writer-wins"
"""The policy :class:`BoardStore` binds to its prefix. LangGraph's ``put`` is an upsert in every
official backend (in-memory, Postgres, SQLite): the last put wins. Under the board's default,
``reject-stale``, every second plain put of an item would be refused as a blind write; under
``merge`` two puts would be merged into a value nobody wrote. ``last-writer-wins`` keeps
LangGraph's meaning and still honours ``expect_version``, which is what the compare-and-set
extension (:meth:`BoardStore.put_if_version`) sends."""

CHECKPOINT_POLICY = "last-writer-wins"
"""The policy :class:`BoardCheckpointSaver` binds to its prefix. Ordering there is not left to a
policy: every write is fenced by the thread's claim, and the one key where order matters (a
chain's head) is written with ``expect_version``, which ``last-writer-wins`` checks."""

PAGE_ENTRIES = 256
"""Entries per board ``list`` call when paging (search, namespaces, deletion, checkpoint lists)."""
PAGES_MAX = 1_000_000 // PAGE_ENTRIES + 2
"""Bound on pages in one scan: the board holds at most ``Limits.keys_max`` (10**6) keys."""
THREAD_LOCKS = 64
"""Stripes of the locks that order one saver's writes per thread (LangGraph may run a step's
tasks, hence their ``put_writes``, on several threads at once)."""
PARTS_MAX = 1 << 16
"""Most parts one stored byte string may name (48 GiB at the default bound): a reference read
back from the board is data, and a forged count must not start an endless run of reads."""
VALUE_MARGIN_BYTES = 4096
"""Room left in a board value for the record around an inline byte string."""
SAFE_SERDE_TYPES = frozenset({"msgpack", "null", "bytes", "bytearray"})
"""Serializer type tags the saver decodes by default: what LangGraph's serializer writes in
strict mode (``msgpack``, and its raw ``null``/``bytes``/``bytearray``). Anything else is refused
with :class:`~quorumboard.consensus.CorruptData` before the serializer sees it: ``pickle`` runs
code by design, ``json`` revives constructors by module name, and an unknown tag is data this
saver did not write. A serializer of your own with other tags (e.g. an encrypting one) passes
its tags as ``serde_types``."""


class UnsupportedOperation(InvalidCommand):
    """The adapter cannot do what was asked (e.g. semantic search without a vector index)."""


# --------------------------------------------------------------------------- key segments


def _seg(text: str) -> str:
    """One key segment for any string, reversibly: ``_`` + percent-encoding of its UTF-8.

    Escapes ``/`` (the key separator), ``%``, control characters and everything outside
    ``[A-Za-z0-9_.~-]``; the ``_`` in front makes an empty string, ``.`` and ``..`` (which a
    board key may not have as a segment) valid segments too. Order-preserving for the ASCII
    alphanumerics of LangGraph's checkpoint ids, so key order is id order."""
    try:
        return "_" + quote(text, safe="")
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"{text!r} is not valid UTF-8 (lone surrogate at {exc.start})") from None


def _unseg(segment: str) -> str:
    try:
        if not segment.startswith("_"):
            raise ValueError("no '_' in front")
        return unquote(segment[1:], errors="strict")
    except ValueError as exc:  # UnicodeDecodeError is one
        raise CorruptData(f"key segment {segment!r} was not written by this adapter: "
                          f"{exc}") from None


def _check_adapter_prefix(prefix: str) -> str:
    check_prefix(prefix)
    if not prefix or not prefix.endswith("/"):
        raise InvalidKey(f"prefix {prefix!r} must be non-empty and end with '/'")
    return prefix


def _scan(board: Board, prefix: str, page_entries: int = PAGE_ENTRIES) -> Iterator[Entry]:
    """Every entry under ``prefix`` in key order, page by page (each page one linearizable read,
    so the scan as a whole is not one snapshot). Raises rather than truncating."""
    after = ""
    for _ in range(PAGES_MAX):
        page = board.list(prefix, limit=page_entries, start_after=after)
        yield from page
        if len(page) < page_entries:
            return
        after = page[-1].key
    raise BoardError(f"listing {prefix!r} did not end within {PAGES_MAX} pages; refusing to "
                     "return a truncated result")


FILTER_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
"""The comparison operators of LangGraph's store filters (as its in-memory store has them)."""


def _check_filter(filter_: object, path: str = "filter") -> None:
    """Refuse an operator LangGraph's filters do not have, before any item is compared (so a
    typo is an error, not an empty result)."""
    if isinstance(filter_, dict):
        for key, sub in filter_.items():
            if isinstance(key, str) and key.startswith("$") and key not in FILTER_OPERATORS:
                raise InvalidCommand(f"{path}: unknown operator {key!r}; "
                                     f"use one of {sorted(FILTER_OPERATORS)}")
            _check_filter(sub, f"{path}.{key}")


def _matches(value: Mapping[str, Any], filter_: Mapping[str, Any]) -> bool:
    """LangGraph's filter semantics (its in-memory store's comparison); an ordering operator
    against a missing or non-numeric field is no match, as in Postgres' JSONB, not an error."""
    try:
        return all(_compare_values(value.get(k), v) for k, v in filter_.items())
    except (TypeError, ValueError):
        return False


_RECORD_FIELDS = ("id", "parent", "checkpoint", "metadata")
_WRITE_FIELDS = ("task", "channel", "path", "idx", "t")


def _shaped(entry: Entry, fields: tuple[str, ...]) -> dict[str, Any]:
    """``entry``'s value if it is an object with ``fields`` (what the saver writes), else
    :class:`CorruptData` naming the key: data under the prefix is read as data, never trusted."""
    value = entry.value
    if not isinstance(value, dict) or any(f not in value for f in fields):
        raise CorruptData(f"{entry.key} does not hold what the checkpointer writes "
                          f"(an object with {', '.join(fields)})")
    return value


def _same_write(kept: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether a stored pending write is ``record`` again (the part generation aside: a
    rewrite of a large value names new parts for the same bytes)."""
    return ({k: v for k, v in kept.items() if k != "gen"}
            == {k: v for k, v in record.items() if k != "gen"})


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


# ------------------------------------------------------------------------------- the store


class BoardStore(BaseStore):
    """A LangGraph ``BaseStore`` on the board: items under ``prefix``, one key per item.

    - Plain ``put`` follows the key's policy; the store binds ``policy`` (default
      :data:`STORE_POLICY`, ``last-writer-wins``) to its prefix at construction, because that is
      what LangGraph's upsert means. ``policy=None`` leaves an existing binding alone.
    - Compare-and-set: :meth:`get_versioned` returns an item with its board version and
      :meth:`put_if_version` writes only if the item is still at that version (0: create only),
      raising :class:`~quorumboard.consensus.StaleVersion` otherwise.
    - TTL (minutes, as in LangGraph) is a board lease: the item is deleted when its lease
      expires, by the leader's clock, with no sweeper. ``refresh_ttl`` on a read renews it, but
      **only the lease holder can renew**: the board refuses a keepalive from any other agent.
      The lease holder is the agent whose put last set the TTL, so when two graphs (two board
      agents) share an item, reads by the other graph do not extend it: the item lives
      ``ttl`` after its writer's last put or read. The store renews only items whose last
      writer is its own agent, and never fails a read over a refresh.
    - Search pages through the board's list (``filter``, ``limit``, ``offset`` over any number
      of items; a scan that cannot finish raises instead of truncating). There is no vector
      index: a search with ``query`` raises :class:`UnsupportedOperation`, and ``index`` on put
      is ignored.
    """

    supports_ttl = True

    def __init__(self, board: Board, prefix: str = "langgraph/store/", *,
                 policy: str | None = STORE_POLICY, ttl_config: TTLConfig | None = None,
                 page_entries: int = PAGE_ENTRIES) -> None:
        self.board = board
        self.prefix = _check_adapter_prefix(prefix)
        self.ttl_config = ttl_config
        if page_entries < 1:
            raise InvalidCommand("page_entries must be >= 1")
        self.page_entries = page_entries
        if policy is not None:
            board.set_policy(self.prefix, policy)

    # ------------------------------------------------------------------- keys and records

    def _ns_prefix(self, namespace: tuple[str, ...]) -> str:
        return self.prefix + "".join(_seg(label) + "/" for label in namespace)

    def _key(self, namespace: tuple[str, ...], key: str) -> str:
        return self._ns_prefix(namespace) + _seg(key)

    def _decode(self, board_key: str) -> tuple[tuple[str, ...], str]:
        if not board_key.startswith(self.prefix):
            raise CorruptData(f"{board_key!r} is not under the store prefix {self.prefix!r}")
        labels = tuple(_unseg(s) for s in board_key[len(self.prefix):].split("/"))
        return labels[:-1], labels[-1]

    def _search_item(self, entry: Entry) -> SearchItem:
        """The item an entry holds (a :class:`SearchItem` is an ``Item`` with a score)."""
        namespace, key = self._decode(entry.key)
        record = entry.value
        try:
            if not isinstance(record, dict) or not isinstance(record.get("value"), dict):
                raise TypeError("no value object")
            created = datetime.fromisoformat(record["created_at"])
            updated = datetime.fromisoformat(record["updated_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptData(f"{entry.key} does not hold a store record (value, created_at, "
                              f"updated_at): {exc}") from None
        return SearchItem(namespace, key, record["value"], created, updated)

    def _item(self, entry: Entry) -> Item:
        found = self._search_item(entry)
        return Item(value=found.value, key=found.key, namespace=found.namespace,
                    created_at=found.created_at, updated_at=found.updated_at)

    def _refresh(self, entry: Entry) -> None:
        """Renew the item's TTL lease if this store's agent holds it (see the class doc).

        Never fails the read it rides on: a lease that expired meanwhile or is not ours is
        skipped, and a cluster that cannot be reached right now is logged and skipped too (the
        item was read; its TTL is renewed by the next read or put that gets through)."""
        if entry.lease is None or entry.author != self.board.agent:
            return
        try:
            self.board.keepalive(entry.lease)
        except (NotFound, PolicyRejected):  # expired meanwhile / not ours
            return
        except Unavailable as exc:
            _log.warning("store_ttl_refresh_failed", key=entry.key, lease=entry.lease,
                         error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------------------ ops

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        results: list[Result] = []
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, GetOp):
                results.append(self._get(op))
            elif isinstance(op, PutOp):
                self._write(op.namespace, op.key, op.value, ttl_min=op.ttl, expect_version=None)
                results.append(None)
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise UnsupportedOperation(f"unknown store operation {type(op).__name__}")
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _get(self, op: GetOp) -> Item | None:
        entry = self.board.get(self._key(op.namespace, op.key))
        if entry is None:
            return None
        if op.refresh_ttl:
            self._refresh(entry)
        return self._item(entry)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.query is not None:
            raise UnsupportedOperation(
                "BoardStore has no vector index: search(query=...) (semantic search) is not "
                "supported; search with filter=... instead")
        _check_filter(op.filter)
        if op.limit <= 0:
            return []
        out: list[SearchItem] = []
        skipped = 0
        for entry in _scan(self.board, self._ns_prefix(op.namespace_prefix),
                           self.page_entries):
            item = self._search_item(entry)
            if op.filter and not _matches(item.value, op.filter):
                continue
            if skipped < op.offset:
                skipped += 1
                continue
            if op.refresh_ttl:
                self._refresh(entry)
            out.append(item)
            if len(out) >= op.limit:
                break
        return out

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for entry in _scan(self.board, self.prefix, self.page_entries):
            namespace, _ = self._decode(entry.key)
            if op.match_conditions and not all(_does_match(c, namespace)
                                               for c in op.match_conditions):
                continue
            found.add(namespace[:op.max_depth] if op.max_depth is not None else namespace)
        return sorted(found)[op.offset:op.offset + op.limit]

    def _write(self, namespace: tuple[str, ...], key: str, value: Mapping[str, Any] | None, *,
               ttl_min: float | None, expect_version: int | None) -> int:
        """Put (or, for ``None``, delete) one item; returns its new version (0 once deleted).

        ``created_at`` is carried over from the current record. A plain put is sent without a
        version, so the prefix's policy decides it; ``expect_version`` makes it a
        compare-and-set. A plain put that races a concurrent *create* of the same key may
        stamp its own clock as ``created_at`` (the two reads both saw no item)."""
        board_key = self._key(namespace, key)
        current = self.board.get(board_key)
        own_old_lease = (current.lease if current is not None and current.lease is not None
                         and current.author == self.board.agent else None)
        if value is None:
            try:
                self.board.delete(board_key, expect_version=expect_version)
            except NotFound:
                if expect_version:
                    raise
                return 0
            self._drop_lease(own_old_lease)
            return 0
        now = _now_iso()
        created = now
        if current is not None and isinstance(current.value, dict) \
                and isinstance(current.value.get("created_at"), str):
            created = current.value["created_at"]
        record = {"value": dict(value), "created_at": created, "updated_at": now}
        lease, granted = self._lease_for(ttl_min, own_old_lease)
        try:
            entry = self.board.put(board_key, record, expect_version=expect_version, lease=lease)
        except BoardError:
            if granted:
                self._drop_lease(lease)
            raise
        if own_old_lease is not None and own_old_lease != lease:
            self._drop_lease(own_old_lease)  # the key moved off it: nothing else lives there
        return entry.version

    def _lease_for(self, ttl_min: float | None, own_old_lease: int | None) -> tuple[int | None,
                                                                                    bool]:
        """The lease an item written with ``ttl_min`` should carry: this agent's current one
        for the item if its TTL is the same (renewed), else a new one. Returns (lease, new)."""
        if ttl_min is None:
            return None, False
        ttl_s = float(ttl_min) * 60.0
        if own_old_lease is not None:
            with contextlib.suppress(NotFound, PolicyRejected):
                info = self.board.keepalive(own_old_lease)
                if abs(info.ttl - ttl_s) < 1e-3:
                    return own_old_lease, False
        return self.board.grant(ttl_s).id, True

    def _drop_lease(self, lease: int | None) -> None:
        if lease is not None:
            with contextlib.suppress(NotFound, PolicyRejected):
                self.board.revoke(lease)

    # -------------------------------------------------------------- compare-and-set extension

    def get_versioned(self, namespace: tuple[str, ...], key: str) -> tuple[Item | None, int]:
        """The item and its board version (``(None, 0)`` if absent), for :meth:`put_if_version`.
        Does not refresh the TTL."""
        entry = self.board.get(self._key(namespace, key))
        if entry is None:
            return None, 0
        return self._item(entry), entry.version

    def put_if_version(self, namespace: tuple[str, ...], key: str,
                       value: Mapping[str, Any] | None, expect_version: int, *,
                       ttl: float | NotProvided | None = NOT_PROVIDED) -> int:
        """Compare-and-set: write ``value`` (``None`` deletes) only if the item is at
        ``expect_version`` (0: only if absent). Returns the new version (0 after a delete).
        Raises :class:`~quorumboard.consensus.StaleVersion` (``current`` holds the item as the
        board saw it) when another put landed first: re-read, merge, retry."""
        _validate_namespace(namespace)
        if expect_version < 0:
            raise InvalidCommand("expect_version must be >= 0")
        ttl_min: float | None
        if isinstance(ttl, NotProvided):
            ttl_min = (self.ttl_config or {}).get("default_ttl")
        else:
            ttl_min = ttl
        return self._write(namespace, key, value, ttl_min=ttl_min,
                           expect_version=expect_version)

    async def aget_versioned(self, namespace: tuple[str, ...],
                             key: str) -> tuple[Item | None, int]:
        return await asyncio.to_thread(self.get_versioned, namespace, key)

    async def aput_if_version(self, namespace: tuple[str, ...], key: str,
                              value: Mapping[str, Any] | None, expect_version: int, *,
                              ttl: float | NotProvided | None = NOT_PROVIDED) -> int:
        return await asyncio.to_thread(lambda: self.put_if_version(
            namespace, key, value, expect_version, ttl=ttl))


# -------------------------------------------------------------------------- the checkpointer


class BoardCheckpointSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on the board, one writer per thread.

    Layout under ``prefix`` (every variable part one escaped segment, see :func:`_seg`)::

        claims/<thread>                           the thread's claim (owner, fence, lease)
        heads/<thread>/<ns>                       the chain's head: its last accepted checkpoint
        threads/<thread>/c/<ns>/<id>              earlier accepted checkpoint records
        threads/<thread>/v/<ns>/<channel>/<ver>   channel values, one per (channel, version)
        threads/<thread>/w/<ns>/<id>/<task>/<idx> pending writes
        threads/<thread>/p/<gen>/<n>              parts of a byte string too large for a value

    **What is guaranteed.** A chain is the sequence of accepted puts of one (thread,
    namespace); the head key holds the last one. A put is accepted only if

    1. it carries the fence of the thread's live claim (another agent holding the thread gets
       :class:`~quorumboard.consensus.ClaimHeld`; a writer whose claim was taken over is refused
       with :class:`~quorumboard.consensus.FencedOut`);
    2. its parent (the ``checkpoint_id`` of the config it is put with) is the chain's current
       head (none for the first checkpoint of a chain), checked against the head as the put
       reads it and made atomic by a compare-and-set on the head's version: a writer that read
       the chain before someone else extended it, or retries a refused put, gets
       :class:`~quorumboard.consensus.StaleVersion` (reason ``head-moved``), whatever its claim
       state and whether or not it shares the claim (two savers under one agent identity);
    3. its id sorts after the head's (LangGraph's ids are time-ordered): a worker whose clock
       is behind the one that wrote the head gets :class:`~quorumboard.consensus.InvalidCommand`
       instead of writing a checkpoint that lists below older ones.

    So without opt-in, each accepted checkpoint's parent is the one accepted before it: the
    chain does not fork, and ``list`` (newest id first) is the chain in reverse order of
    acceptance. **Branching** (LangGraph's time travel: ``invoke`` or ``update_state`` from an
    older ``checkpoint_id``) puts a checkpoint whose parent is not the head; it is refused by
    default and allowed with ``branching=True``: the new checkpoint still goes through the
    claim, the compare-and-set and the id order, and becomes the head, but its parent may be
    any checkpoint. The old branch's checkpoints stay readable by id.

    Pending writes (:meth:`put_writes`) carry the fence too. After this saver (re)claims a
    thread (its first write, or after its claim lapsed), writes are accepted only for the
    head this saver last read or wrote (``get_tuple``, which every graph run starts with, or
    ``put``), or for a checkpoint newer than the head (one of this saver's puts still in
    flight): a worker whose claim lapsed while another extended the thread cannot attach its
    late task results to the new owner's checkpoints. While a saver holds its claim without a
    lapse, its writes are not checked against the head (nobody else wrote the thread meanwhile,
    and LangGraph stores a step's writes on the checkpoint the step started from, with
    ``durability="async"`` possibly after the next checkpoint was put). A write of a task and index that is
    already stored is kept once (a retry); a different value for it raises
    :class:`~quorumboard.consensus.StaleVersion` (reason ``write-kept``) instead of being
    dropped silently. Error and interrupt writes (negative indexes) are replaced, as in
    LangGraph's savers.

    Writing a checkpoint: the checks above (one read of the head), the new channel values,
    the current head's record copied to ``c/``, then the head compare-and-set. Only accepted
    records are ever visible: a put refused at any step deletes the values and parts it wrote.
    A worker that crashes mid-put can leave unreferenced value and part keys (never a record):
    :meth:`sweep` deletes them, and :meth:`delete_thread` deletes everything of a thread.

    The claim is taken on the first write, renewed on each write (and by :meth:`keepalive`),
    released by :meth:`close` (and by :meth:`delete_thread`), and lapses ``claim_ttl_s``
    after the holder's last renewal, after which another worker can claim the thread and
    continue its chain. After any refusal the run must start over from ``get_tuple`` (a new
    ``invoke``); retrying the same ``put`` is refused again.

    Values are the serializer's bytes, base64 in board values; one larger than the board's
    value bound (``value_bytes_max``) is split across part keys written before the record that
    names them, and read back checked against its length and SHA-256. The default serializer is
    LangGraph's in strict mode (``allowed_msgpack_modules=None``): only its fixed list of safe
    types (datetime, uuid, LangChain messages, ...) is rebuilt; a checkpoint naming any other
    module gets its plain payload back and the module is never imported. Only the type tags in
    ``serde_types`` (default :data:`SAFE_SERDE_TYPES`) are decoded; ``pickle``, ``json`` and
    any other tag are refused outright (:class:`~quorumboard.consensus.CorruptData`).
    Types of your own in a graph's state therefore read back as plain data until code names
    them: set ``LANGGRAPH_STRICT_MSGPACK=true`` (LangGraph then allowlists the exact types the
    graph's schema declares, through ``with_allowlist``, which this saver honours) or pass
    ``serde=JsonPlusSerializer(allowed_msgpack_modules=[(module, name), ...])``.
    """

    def __init__(self, board: Board, prefix: str = "langgraph/checkpoints/", *,
                 claim_ttl_s: float = 30.0, serde: SerializerProtocol | None = None,
                 policy: str | None = CHECKPOINT_POLICY,
                 value_bytes_max: int = VALUE_BYTES_MAX, branching: bool = False,
                 serde_types: Iterable[str] = SAFE_SERDE_TYPES) -> None:
        super().__init__(serde=serde or JsonPlusSerializer(allowed_msgpack_modules=None))
        self.board = board
        self.prefix = _check_adapter_prefix(prefix)
        if claim_ttl_s <= 0:
            raise InvalidCommand("claim_ttl_s must be > 0")
        self.claim_ttl_s = claim_ttl_s
        if value_bytes_max < 4 * VALUE_MARGIN_BYTES:
            raise InvalidCommand(f"value_bytes_max must be at least {4 * VALUE_MARGIN_BYTES}")
        self._part_bytes = (value_bytes_max - VALUE_MARGIN_BYTES) // 4 * 3
        """Raw bytes per part: its base64 plus the record around it fits one board value."""
        self.branching = branching
        """Accept a put whose parent is not the head (time travel); see the class doc."""
        self.serde_types = frozenset(serde_types)
        if {"pickle", "json"} & self.serde_types:
            raise InvalidCommand("serde_types must not include 'pickle' or 'json': those "
                                 "formats run code or import modules named in the data")
        self._lock = threading.Lock()
        self._thread_locks = [threading.Lock() for _ in range(THREAD_LOCKS)]
        self._claims: dict[str, Claim] = {}
        self._seen: dict[tuple[str, str], str] = {}
        """(thread, ns) -> id of the head as this saver last read (get_tuple) or wrote it: after
        a fresh claim, pending writes are accepted only for that head (see the class doc)."""
        if policy is not None:
            board.set_policy(self.prefix, policy)

    # ----------------------------------------------------------------------------- keys

    def _claim_key(self, thread: str) -> str:
        return f"{self.prefix}claims/{_seg(thread)}"

    def _head_key(self, thread: str, ns: str) -> str:
        return f"{self.prefix}heads/{_seg(thread)}/{_seg(ns)}"

    def _thread_prefix(self, thread: str) -> str:
        return f"{self.prefix}threads/{_seg(thread)}/"

    def _record_key(self, thread: str, ns: str, cid: str) -> str:
        return f"{self._thread_prefix(thread)}c/{_seg(ns)}/{_seg(cid)}"

    def _value_key(self, thread: str, ns: str, channel: str, version: str | int | float) -> str:
        return f"{self._thread_prefix(thread)}v/{_seg(ns)}/{_seg(channel)}/{_seg(str(version))}"

    def _writes_prefix(self, thread: str, ns: str, cid: str) -> str:
        return f"{self._thread_prefix(thread)}w/{_seg(ns)}/{_seg(cid)}/"

    # ------------------------------------------------------------------ claims and fences

    def _thread_lock(self, thread: str) -> threading.Lock:
        """The lock that orders this saver's writes to ``thread`` (striped: bounded memory)."""
        digest = hashlib.blake2b(thread.encode("utf-8", "surrogatepass"), digest_size=4)
        return self._thread_locks[int.from_bytes(digest.digest(), "big") % THREAD_LOCKS]

    def _claim(self, thread: str) -> tuple[FenceRef, bool]:
        """The fence for a write to ``thread`` (thread lock held), and whether the claim is
        fresh: taken now (first use, or the old one lapsed) rather than renewed. Between a
        lapse and a fresh claim another worker may have written the thread, so a caller
        re-checks what it writes against the chain (the put's parent check always does)."""
        held = self._claims.get(thread)
        if held is not None:
            try:
                self.board.keepalive(held)
                return FenceRef(key=held.key, fence=held.fence), False
            except NotFound:
                # Lapsed (no write for claim_ttl_s, e.g. a human took a while to answer).
                del self._claims[thread]
        try:
            held = self.board.claim(self._claim_key(thread), self.claim_ttl_s,
                                    {"thread": thread, "owner": self.board.agent})
        except ClaimHeld as exc:
            owner = exc.detail.get("owner", "another agent")
            raise ClaimHeld(
                f"thread {thread!r} is being written by {owner}: one writer per thread; "
                "the claim lapses once its holder has not written for the claim's TTL",
                current=exc.current, policy=exc.policy, reason="thread-held",
                detail=exc.detail) from exc
        self._claims[thread] = held
        return FenceRef(key=held.key, fence=held.fence), True

    def _guarded(self, thread: str, write: Callable[[], _T]) -> _T:
        """Run ``write`` and forget the claim if the board says it is no longer ours."""
        try:
            return write()
        except FencedOut:
            self._claims.pop(thread, None)
            raise

    def keepalive(self) -> list[str]:
        """Renew every thread claim this saver holds, without writing; returns those threads.

        For a worker that is alive but will not write for longer than ``claim_ttl_s`` (a slow
        model call, a human in the loop) and wants to keep its threads meanwhile. A claim that
        already lapsed is dropped here (the next write claims the thread afresh, and is checked
        against the chain as it is then)."""
        kept = []
        with self._lock:
            held = list(self._claims.items())
        for thread, claim in held:
            with self._thread_lock(thread):
                if self._claims.get(thread) is not claim:
                    continue
                try:
                    self.board.keepalive(claim)
                    kept.append(thread)
                except NotFound:
                    del self._claims[thread]
        return kept

    def release(self, thread_id: str) -> bool:
        """Hand ``thread_id`` over: release its claim now (no lapse to wait for). A later write
        here claims it afresh and is checked against the chain as it is then. Returns whether a
        claim was released (``False``: not held, or already lapsed)."""
        thread = str(thread_id)
        with self._thread_lock(thread):
            claim = self._claims.pop(thread, None)
        if claim is None:
            return False
        try:
            self.board.release(claim)
        except NotFound:  # lapsed meanwhile: released all the same
            return False
        return True

    def close(self) -> None:
        """Release every thread this saver claimed (best effort: a lapsed claim is already
        gone). The saver may be used again: it claims threads anew on their next write."""
        with self._lock:
            threads = list(self._claims)
        for thread in threads:
            with contextlib.suppress(BoardError):
                self.release(thread)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> BoardCheckpointSaver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---------------------------------------------------------------- bytes <-> board values

    def _dump(self, thread: str, obj: Any, fence: FenceRef, inline_max: int,
              written: list[str]) -> dict[str, Any]:
        type_, data = self.serde.dumps_typed(obj)
        return {"t": type_, **self._put_bytes(thread, bytes(data), fence, inline_max, written)}

    def _put_bytes(self, thread: str, data: bytes, fence: FenceRef, inline_max: int,
                   written: list[str]) -> dict[str, Any]:
        """A reference to ``data``: inline base64 if at most ``inline_max`` bytes, else parts
        written now (under a fresh generation, so a rewrite never mixes parts). Every key
        written is appended to ``written``, for the caller to delete if its write is refused."""
        if len(data) <= inline_max:
            return {"b64": base64.b64encode(data).decode("ascii")}
        gen = uuid.uuid4().hex
        parts = range(0, len(data), self._part_bytes)
        if len(parts) > PARTS_MAX:
            raise InvalidValue(f"a value of {len(data)} bytes needs more than {PARTS_MAX} parts")
        for n, start in enumerate(parts):
            chunk = base64.b64encode(data[start:start + self._part_bytes]).decode("ascii")
            key = self._part_key(thread, gen, n)
            written.append(key)
            self._guarded(thread, partial(self.board.put, key, {"b64": chunk}, fence=fence))
        return {"gen": gen, "parts": len(parts), "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}

    def _part_key(self, thread: str, gen: str, n: int) -> str:
        return f"{self._thread_prefix(thread)}p/{gen}/{n:06d}"

    def _discard(self, thread: str, written: Sequence[str], fence: FenceRef) -> None:
        """Delete what a refused write left (values, parts), best effort: what cannot be
        deleted now (fenced out, cluster unreachable) is unreferenced and :meth:`sweep` or
        :meth:`delete_thread` removes it later."""
        for key in written:
            try:
                self.board.delete(key, fence=fence)
            except NotFound:
                continue
            except BoardError as exc:
                _log.warning("checkpoint_cleanup_incomplete", thread=thread, left=len(written),
                             error=f"{type(exc).__name__}: {exc}")
                return

    def _get_bytes(self, thread: str, ref: Mapping[str, Any]) -> bytes:
        """The bytes ``ref`` names (inline or in parts), checked; :class:`CorruptData` if they
        are not what was written."""
        try:
            if "b64" in ref:
                return base64.b64decode(ref["b64"], validate=True)
            gen, count, size = ref["gen"], ref["parts"], ref["size"]
            if not (isinstance(gen, str) and isinstance(count, int) and isinstance(size, int)
                    and 0 < count <= PARTS_MAX):
                raise ValueError(f"malformed reference {ref!r}")
            chunks = []
            for n in range(count):
                entry = self.board.get(self._part_key(thread, gen, n))
                if entry is None or not isinstance(entry.value, dict):
                    raise ValueError(f"part {n} of {count} is missing")
                chunks.append(base64.b64decode(entry.value["b64"], validate=True))
        except (KeyError, TypeError, ValueError) as exc:  # binascii.Error is a ValueError
            raise CorruptData(f"thread {thread!r}: a stored value does not decode: {exc}") \
                from None
        data = b"".join(chunks)
        if len(data) != size or hashlib.sha256(data).hexdigest() != ref.get("sha256"):
            raise CorruptData(f"thread {thread!r}: a value split in {count} parts does not "
                              "match its length and SHA-256")
        return data

    def _load(self, thread: str, ref: Mapping[str, Any]) -> Any:
        type_ = ref.get("t")
        if not isinstance(type_, str):
            raise CorruptData(f"thread {thread!r}: a stored value has no type tag")
        if type_ not in self.serde_types:
            raise CorruptData(f"thread {thread!r}: refusing to decode {type_!r} data: only "
                              f"{sorted(self.serde_types)} are decoded ('pickle' and 'json' "
                              "can run code or import modules named in the data)")
        return self.serde.loads_typed((type_, self._get_bytes(thread, ref)))

    # -------------------------------------------------------------------------- writing

    def _read_head(self, thread: str, ns: str) -> tuple[int, dict[str, Any] | None]:
        entry = self.board.get(self._head_key(thread, ns))
        return (0, None) if entry is None else (entry.version, _shaped(entry, _RECORD_FIELDS))

    def _check_extends(self, thread: str, ns: str, head: Mapping[str, Any] | None,
                       parent: str | None, cid: str) -> None:
        """Refuse a put that would fork the chain or break its id order (see the class doc)."""
        where = f"thread {thread!r} (namespace {ns!r})"
        head_id = None if head is None else str(head["id"])
        # A put with no parent starts the thread afresh (LangGraph's checkpointers accept that;
        # its conformance suite does it): allowed when this saver has seen the current head, so
        # it is the one writer moving on, never a second writer with a stale view.
        fresh_start = parent is None and head_id is not None \
            and self._seen.get((thread, ns)) == head_id
        if parent != head_id and not fresh_start and not self.branching:
            raise StaleVersion(
                f"the head of {where} is {head_id}, not this put's parent {parent}: another "
                "writer advanced the chain since it was read, and writing on would fork it; "
                "start over from get_tuple (or construct the saver with branching=True to "
                "branch from an older checkpoint on purpose)",
                reason="head-moved", detail={"head": head_id, "parent": parent})
        if head_id is not None and cid <= head_id:
            raise InvalidCommand(
                f"checkpoint {cid} of {where} does not sort after the head {head_id}: "
                "LangGraph's ids are time-ordered, so this worker's clock is behind the one "
                "that wrote the head (or the id was reused); fix the clock and start over")

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        conf = config["configurable"]
        thread, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        parent = conf.get("checkpoint_id")
        parent = None if parent is None else str(parent)
        cid = str(checkpoint["id"])
        stored = checkpoint.copy()
        values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
        result: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                                   "checkpoint_id": cid}}
        with self._thread_lock(thread):
            fence, _ = self._claim(thread)
            version, head = self._read_head(thread, ns)
            if head is not None and str(head["id"]) == cid and head.get("parent") == parent:
                self._seen[(thread, ns)] = cid  # this very put landed already (a retry)
                return result
            self._check_extends(thread, ns, head, parent, cid)
            written: list[str] = []
            try:
                for channel, channel_version in new_versions.items():
                    ref = (self._dump(thread, values[channel], fence, self._part_bytes, written)
                           if channel in values else {"t": "empty"})
                    vkey = self._value_key(thread, ns, channel, channel_version)
                    written.append(vkey)
                    self._guarded(thread, partial(self.board.put, vkey, ref, fence=fence))
                inline_max = self._part_bytes // 4
                record = {"id": cid, "parent": parent,
                          "checkpoint": self._dump(thread, stored, fence, inline_max, written),
                          "metadata": self._dump(thread,
                                                 get_checkpoint_metadata(config, metadata),
                                                 fence, inline_max, written)}
                if head is not None:  # an accepted record: readers see it in c/ from now on
                    old = head
                    self._guarded(thread, lambda: self.board.put(
                        self._record_key(thread, ns, str(old["id"])), old, fence=fence))
                self._guarded(thread, lambda: self.board.put(
                    self._head_key(thread, ns), record, expect_version=version, fence=fence))
            except Conflict as exc:  # decided: nothing of this put is referenced
                self._discard(thread, written, fence)
                if isinstance(exc, StaleVersion):
                    raise StaleVersion(
                        f"the head of thread {thread!r} (namespace {ns!r}) moved while this "
                        "put was written: another writer advanced the chain, and writing on "
                        "would fork it; start over from get_tuple", current=exc.current,
                        policy=exc.policy, reason="head-moved", detail=exc.detail) from exc
                raise
            self._seen[(thread, ns)] = cid
        return result

    def _check_writes_target(self, thread: str, ns: str, cid: str) -> None:
        """After a fresh claim: refuse pending writes unless they are for the head this saver
        last read or wrote, or for a checkpoint newer than the head (a put of this saver still
        in flight); see the class doc."""
        _, head = self._read_head(thread, ns)
        if head is None:
            return
        head_id = str(head["id"])
        if cid > head_id or (cid == head_id and self._seen.get((thread, ns)) == head_id):
            return
        if self.branching and cid != head_id \
                and self.board.get(self._record_key(thread, ns, cid)) is not None:
            return
        raise StaleVersion(
            f"pending writes for checkpoint {cid} of thread {thread!r} (namespace {ns!r}) "
            f"refused: this saver claimed the thread afresh and the head is now {head_id}, "
            f"which it has not read (it last saw {self._seen.get((thread, ns))}); another "
            "worker may have continued the thread: start over from get_tuple",
            reason="head-moved", detail={"head": head_id, "checkpoint": cid})

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        thread, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        cid = str(conf["checkpoint_id"])
        prefix = self._writes_prefix(thread, ns, cid)
        with self._thread_lock(thread):
            fence, fresh = self._claim(thread)
            if fresh:
                try:
                    self._check_writes_target(thread, ns, cid)
                except StaleVersion:
                    # Give the fresh claim back: holding it, the next write would be a
                    # renewal, and a blind retry of this one would skip the check.
                    claim = self._claims.pop(thread)
                    with contextlib.suppress(BoardError):
                        self.board.release(claim)
                    raise
            for n, (channel, value) in enumerate(writes):
                idx = WRITES_IDX_MAP.get(channel, n)
                written: list[str] = []
                record = {"task": task_id, "channel": channel, "path": task_path, "idx": idx,
                          **self._dump(thread, value, fence, self._part_bytes, written)}
                key = f"{prefix}{_seg(task_id)}/{idx}"
                # A regular write is kept once (a retried task must not replace it); the
                # special ones (error, interrupt, ...) are replaced, as LangGraph's savers do.
                try:
                    self._guarded(thread, partial(self.board.put, key, record, fence=fence,
                                                  expect_version=0 if idx >= 0 else None))
                except Conflict as exc:
                    self._discard(thread, written, fence)
                    if not isinstance(exc, StaleVersion):
                        raise
                    kept = exc.current.value if exc.current is not None else None
                    if isinstance(kept, dict) and _same_write(kept, record):
                        continue  # the same write again: kept once
                    raise StaleVersion(
                        f"task {task_id!r} already wrote {channel!r} (index {idx}) for "
                        f"checkpoint {cid} of thread {thread!r} with a different value: the "
                        "first write is kept; a task's writes are final once stored",
                        current=exc.current, policy=exc.policy, reason="write-kept",
                        detail={"task": task_id, "channel": channel, "idx": idx}) from exc

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of the thread, under its claim (so a live
        writer elsewhere is refused with ``ClaimHeld`` instead of losing its chain), then
        release the claim."""
        thread = str(thread_id)
        with self._thread_lock(thread):
            fence, _ = self._claim(thread)
            for prefix in (f"{self.prefix}heads/{_seg(thread)}/", self._thread_prefix(thread)):
                for _ in range(PAGES_MAX):
                    page = self.board.list(prefix, limit=PAGE_ENTRIES)
                    for entry in page:
                        with contextlib.suppress(NotFound):
                            self._guarded(thread, partial(self.board.delete, entry.key,
                                                          fence=fence))
                    if len(page) < PAGE_ENTRIES:
                        break
        with contextlib.suppress(BoardError):
            self.release(thread)

    def sweep(self, thread_id: str) -> int:
        """Delete the value and part keys of ``thread_id`` that no checkpoint or pending write
        references (left by a worker that crashed mid-put, or whose cleanup of a refused put
        could not reach the cluster). Runs under the thread's claim, like a write (so not
        while another worker holds the thread); a saver under the same agent identity shares
        that claim, so do not sweep a thread such a saver is writing at the same time (its
        put's values are unreferenced until its head compare-and-set). Returns how many keys
        it deleted."""
        thread = str(thread_id)
        with self._thread_lock(thread):
            fence, _ = self._claim(thread)
            keep: set[str] = set()

            def refs(ref: Mapping[str, Any]) -> None:
                if isinstance(ref.get("gen"), str) and isinstance(ref.get("parts"), int):
                    keep.update(self._part_key(thread, ref["gen"], n)
                                for n in range(min(ref["parts"], PARTS_MAX)))

            base = self._thread_prefix(thread)
            chains = {ns for _, ns in self._chains({"configurable": {"thread_id": thread}})}
            for ns in chains:
                for record in self._records(thread, ns):
                    refs(record["checkpoint"])
                    refs(record["metadata"])
                    checkpoint = self._load(thread, record["checkpoint"])
                    if not isinstance(checkpoint, dict) \
                            or not isinstance(checkpoint.get("channel_versions"), dict):
                        raise CorruptData(f"thread {thread!r}: checkpoint {record['id']} does "
                                          "not decode to a checkpoint")
                    for channel, version in checkpoint["channel_versions"].items():
                        vkey = self._value_key(thread, ns, channel, version)
                        keep.add(vkey)
                        entry = self.board.get(vkey)
                        if entry is not None and isinstance(entry.value, dict):
                            refs(entry.value)
            for entry in _scan(self.board, f"{base}w/"):
                if isinstance(entry.value, dict):
                    refs(entry.value)
            deleted = 0
            for what in ("v/", "p/"):
                for entry in list(_scan(self.board, base + what)):
                    if entry.key not in keep:
                        with contextlib.suppress(NotFound):
                            self._guarded(thread, partial(self.board.delete, entry.key,
                                                          fence=fence))
                            deleted += 1
        return deleted

    # -------------------------------------------------------------------------- reading


    def _tuple(self, thread: str, ns: str, record: Mapping[str, Any]) -> CheckpointTuple:
        """The checkpoint a record (checked by :func:`_shaped`) names, with its channel values
        and pending writes read from the board."""
        cid = str(record["id"])
        checkpoint: Checkpoint = self._load(thread, record["checkpoint"])
        metadata: CheckpointMetadata = self._load(thread, record["metadata"])
        if not (isinstance(checkpoint, dict) and isinstance(metadata, dict)
                and isinstance(checkpoint.get("channel_versions"), dict)):
            raise CorruptData(f"thread {thread!r}: checkpoint {cid} does not decode to a "
                              "checkpoint and its metadata")
        values: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            entry = self.board.get(self._value_key(thread, ns, channel, version))
            if entry is not None and isinstance(entry.value, dict) \
                    and entry.value.get("t") != "empty":
                values[channel] = self._load(thread, entry.value)
        stored = [_shaped(e, _WRITE_FIELDS)
                  for e in _scan(self.board, self._writes_prefix(thread, ns, cid))]
        stored.sort(key=lambda w: writes_sort_key(str(w["path"]), str(w["task"]),
                                                  int(w["idx"])))
        pending: list[PendingWrite] = [(str(w["task"]), str(w["channel"]), self._load(thread, w))
                                       for w in stored]
        parent = record.get("parent")
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                     "checkpoint_id": cid}},
            checkpoint={**checkpoint, "channel_values": values},
            metadata=metadata,
            parent_config=({"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                             "checkpoint_id": parent}} if parent else None),
            pending_writes=pending)

    def _records(self, thread: str, ns: str) -> list[dict[str, Any]]:
        """Every accepted checkpoint record of one chain, newest id first (head read first: a
        put that lands meanwhile copies the old head to c/ before replacing it, so none is
        missed)."""
        head = self.board.get(self._head_key(thread, ns))
        by_id: dict[str, dict[str, Any]] = {}
        for entry in _scan(self.board, f"{self._thread_prefix(thread)}c/{_seg(ns)}/"):
            record = _shaped(entry, _RECORD_FIELDS)
            by_id[str(record["id"])] = record
        if head is not None:
            record = _shaped(head, _RECORD_FIELDS)
            by_id[str(record["id"])] = record
        return [by_id[k] for k in sorted(by_id, reverse=True)]

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        cid = get_checkpoint_id(config)
        head = self.board.get(self._head_key(thread, ns))
        record = _shaped(head, _RECORD_FIELDS) if head is not None else None
        if record is not None and (not cid or record["id"] == cid):
            self._seen[(thread, ns)] = str(record["id"])  # this saver has read the head
        if cid and (record is None or record["id"] != cid):
            entry = self.board.get(self._record_key(thread, ns, cid))
            record = _shaped(entry, _RECORD_FIELDS) if entry is not None else None
        return None if record is None else self._tuple(thread, ns, record)

    def _chains(self, config: RunnableConfig | None) -> Iterator[tuple[str, str]]:
        """(thread, namespace) pairs a ``list`` call covers, from the chains' heads."""
        conf = config["configurable"] if config else {}
        ns = conf.get("checkpoint_ns")
        if "thread_id" in conf and ns is not None:
            yield str(conf["thread_id"]), str(ns)
            return
        prefix = f"{self.prefix}heads/"
        if "thread_id" in conf:
            prefix += _seg(str(conf["thread_id"])) + "/"
        for entry in _scan(self.board, prefix):
            thread_seg, ns_seg = entry.key[len(f"{self.prefix}heads/"):].split("/")
            yield _unseg(thread_seg), _unseg(ns_seg)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        want_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread, ns in self._chains(config):
            for record in self._records(thread, ns):
                cid = str(record["id"])
                if (want_id and cid != want_id) or (before_id and cid >= before_id):
                    continue
                if filter:
                    metadata = self._load(thread, record["metadata"])
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                if remaining is not None:
                    if remaining <= 0:
                        return
                    remaining -= 1
                yield self._tuple(thread, ns, record)

    def get_next_version(self, current: str | int | None, channel: None) -> str:
        """``<counter>.<random>`` as LangGraph's own savers do: the random part keeps the value
        keys of two branches of a thread (time travel) from colliding."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # ---------------------------------------------------------------------- async twins

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        items = self.list(config, filter=filter, before=before, limit=limit)
        done = object()
        for _ in range(2**62):  # bounded by the listing, which is bounded in pages
            item = await asyncio.to_thread(next, items, done)
            if item is done:
                return
            assert isinstance(item, CheckpointTuple)
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

