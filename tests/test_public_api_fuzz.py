"""Every public call validates into the typed tree: only ``BoardError`` subclasses come out.

A fuzz of the public client found raw ``pydantic.ValidationError`` escaping from inside the
library for bad TTLs and versions. Here Hypothesis drives every public ``Board`` method (and
``connect``) with arbitrary arguments, mostly invalid, against a real 3-replica cluster; after
the run the cluster still commits, serves reads and agrees on one state digest."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumboard.consensus import (
    Board,
    BoardError,
    InvalidCommand,
    InvalidKey,
    LocalCluster,
    connect,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("fuzz"),
                      log_level="warning") as c:
        yield c


@pytest.fixture(scope="module")
def board(cluster: LocalCluster) -> Board:
    return cluster.board(agent="fuzzer")


@pytest.mark.parametrize(("call", "argument"), [
    (lambda b: b.grant(ttl=math.nan), "ttl"),
    (lambda b: b.grant(ttl=1e12), "ttl"),
    (lambda b: b.claim("fz/c", ttl=-3), "ttl"),
    (lambda b: b.put("fz/p", 1, expect_version=-1), "expect_version"),
    (lambda b: b.delete("fz/p", expect_version=-5), "expect_version"),
    (lambda b: b.put("fz/p", 1, expect_version=2**64), "expect_version"),
    (lambda b: b.keepalive("seven"), "lease"),
    (lambda b: b.list("fz/", limit=0), "limit"),
    (lambda b: b.history("fz/p", limit=-1), "limit"),
    (lambda b: b.watch("fz/", start_revision=-2), "start_revision"),
    (lambda b: b.watch("fz/", idle_timeout_s=math.inf), "idle_timeout_s"),
    (lambda b: b.vote("fz/v", proposal=2**70), "proposal"),
    (lambda b: b.release(3), "claim"),
])
def test_the_fuzz_findings_are_invalid_command_naming_the_argument(
        board: Board, call: Callable[[Board], object], argument: str) -> None:
    with pytest.raises(InvalidCommand, match=argument):
        call(board)


def test_bad_connect_arguments_are_typed() -> None:
    for endpoints in ("", "localhost", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:x", 5, None):
        with pytest.raises(InvalidCommand, match="endpoints"):
            connect(endpoints, agent="a")  # type: ignore[arg-type]
    with pytest.raises(InvalidCommand, match="agent"):
        connect("127.0.0.1:1", agent="")
    with pytest.raises(InvalidCommand, match="timeout_s"):
        connect("127.0.0.1:1", agent="a", timeout_s=-1)


anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                         max_size=2),
    st.builds(object), st.just(()), st.just(set()),
)
keys = st.one_of(st.from_regex(r"fz/[a-c]{1,2}", fullmatch=True), anything)
prefixes = st.one_of(st.sampled_from(["", "fz/", "fz/a"]), anything)
values = st.one_of(st.integers(-5, 5), st.text(max_size=5), anything,
                   st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=2),
                                max_leaves=40))
ttls = st.one_of(st.floats(0.5, 30.0), anything)
small = st.one_of(st.integers(0, 5), anything)


def _kwargs(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Each keyword present or left at its default."""
    return st.fixed_dictionaries({}, optional=fields)


CALLS: dict[str, st.SearchStrategy[tuple[tuple[Any, ...], dict[str, Any]]]] = {
    "put": st.tuples(st.tuples(keys, values),
                     _kwargs(expect_version=small, lease=small, fence=anything)),
    "propose": st.tuples(st.tuples(keys, values), _kwargs(expect_version=small)),
    "vote": st.tuples(st.tuples(keys, small), _kwargs(approve=anything)),
    "withdraw": st.tuples(st.tuples(keys, small), _kwargs()),
    "delete": st.tuples(st.tuples(keys), _kwargs(expect_version=small, fence=anything)),
    "grant": st.tuples(st.tuples(ttls), _kwargs()),
    "keepalive": st.tuples(st.tuples(small), _kwargs()),
    "revoke": st.tuples(st.tuples(small), _kwargs()),
    "claim": st.tuples(st.tuples(keys, ttls), _kwargs(value=values)),
    "release": st.tuples(st.tuples(anything), _kwargs()),
    "set_policy": st.tuples(st.tuples(prefixes, st.one_of(st.sampled_from(
        ["counter", "no-such-policy", "lww"]), anything)), _kwargs(step=anything)),
    "get": st.tuples(st.tuples(keys), _kwargs(stale=anything)),
    "list": st.tuples(st.tuples(prefixes), _kwargs(stale=anything, limit=small,
                                                   start_after=anything)),
    "list_many": st.tuples(st.tuples(st.one_of(st.lists(prefixes, max_size=3), anything)),
                           _kwargs(stale=anything, limit=small)),
    "history": st.tuples(st.tuples(keys), _kwargs(limit=small)),
    "pending": st.tuples(st.tuples(keys), _kwargs()),
    "lease": st.tuples(st.tuples(small), _kwargs()),
    "claims": st.tuples(st.tuples(prefixes), _kwargs(stale=anything, limit=small)),
    "policies": st.tuples(st.tuples(), _kwargs(stale=anything, limit=small)),
    "leases": st.tuples(st.tuples(), _kwargs(stale=anything, limit=small)),
    "status": st.tuples(st.tuples(), _kwargs(digest=anything)),
    "watch": st.tuples(st.tuples(prefixes),
                       _kwargs(start_revision=small, idle_timeout_s=anything)),
}


def test_every_public_call_raises_only_board_errors(cluster: LocalCluster) -> None:
    """The fuzz, then (in the same test, whatever the test order) the cluster's health: the fuzz
    may have bound policies anywhere under fz/, so the check writes elsewhere, with
    compare-and-set, and compares every replica's digest."""
    board = cluster.board(agent="fuzzer")

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(sorted(CALLS)).flatmap(lambda name: st.tuples(st.just(name),
                                                                         CALLS[name])))
    def fuzz(call: tuple[str, tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        name, (args, kwargs) = call
        try:
            result = getattr(board, name)(*args, **kwargs)
            if name == "watch":
                result.close()  # validated at the call; nothing was streamed
        except BoardError:
            pass

    fuzz()
    with pytest.raises(InvalidKey):
        board.put("/bad", 1)
    entry = board.put("after/fuzz", {"ok": True}, expect_version=0)
    assert board.get("after/fuzz") == entry
    assert board.status().role in ("leader", "follower")
    # One digest on every replica at one poll (wait_converged raises otherwise). Not a second
    # poll after it: leases and claims the fuzz granted expire meanwhile, and a replica that
    # has applied an expiry the others have not yet applied shows another digest for a moment.
    assert cluster.wait_converged()


@settings(max_examples=60, deadline=None)
@given(endpoints=st.one_of(st.text(max_size=20), anything, st.lists(anything, max_size=2)),
       agent=st.one_of(st.text(max_size=3), anything),
       secret=st.one_of(st.none(), st.text(max_size=3), anything),
       timeout_s=st.one_of(st.floats(0.1, 5), anything))
def test_connect_raises_only_board_errors(endpoints: Any, agent: Any, secret: Any,
                                          timeout_s: Any) -> None:
    with contextlib.suppress(BoardError):
        connect(endpoints, agent=agent, secret=secret, timeout_s=timeout_s).close()
