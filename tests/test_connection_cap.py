"""A replica's cap on client connections: a per-replica setting, refused with the handshake's
refusal frame the client raises as :class:`TooManyConnections` (never a bare close), and the
open-file limit the replica raised at start, reported in ``status``.

Real replica processes on 127.0.0.1, one cluster for the module. The cluster is started with
this process's soft open-file limit lowered (the replicas inherit it), so ``status`` can show
that a replica raised it."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumboard.consensus import (
    AuthError,
    Board,
    InvalidCommand,
    LocalCluster,
    TooManyConnections,
    Unavailable,
)
from quorumboard.consensus.cli import EXIT_UNAVAILABLE, EXIT_USAGE
from quorumboard.consensus.cli import main as cli_main
from quorumboard.consensus.wire.auth import (
    CLIENT_LABEL,
    RAFT_LABEL,
    Channel,
    new_nonce,
    refusal_frame,
)
from tests.conftest import leader_status, wait_until

CAP = 4
INHERITED_SOFT_LIMIT = 512


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, INHERITED_SOFT_LIMIT)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:  # the replica processes start with the lowered soft limit
        cluster = LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("cap"),
                               log_level="warning", connections_max=CAP)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with cluster:
        yield cluster


def _idle(cluster: LocalCluster) -> int:
    """The leader's index, once only our own status probe holds a connection to it."""
    leader = cluster.wait_for_leader()
    wait_until(lambda: (s := cluster.status()[leader]) is not None and s.client_connections == 1,
               what="the leader's earlier connections to close")
    return leader


def test_status_shows_the_raised_open_file_limit_and_the_cap(cluster: LocalCluster) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = 2**20 if hard == resource.RLIM_INFINITY else min(hard, 2**20)
    for status in cluster.status():
        assert status is not None
        assert status.open_files_limit == wanted, "the replica did not raise its soft limit"
        assert status.connections_max == CAP
        assert status.client_connections >= 1  # the probe asking
    if wanted > INHERITED_SOFT_LIMIT:  # otherwise this machine's hard limit allows no raise
        assert leader_status(cluster).open_files_limit > INHERITED_SOFT_LIMIT


def test_status_on_the_command_line_shows_the_limit(cluster: LocalCluster,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    leader = _idle(cluster)
    code = cli_main(["status", "--endpoints", cluster.endpoints[leader], "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert shown["open_files_limit"] == leader_status(cluster).open_files_limit > 0
    assert shown["connections_max"] == CAP


def test_the_connection_past_the_cap_gets_the_typed_error(
        cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    leader = _idle(cluster)
    address = cluster.endpoints[leader]
    held = [Board([address], f"holder-{i}", timeout_s=5.0) for i in range(CAP)]
    try:
        for i, board in enumerate(held):  # each Board holds one connection from here on
            board.put(f"cap/{i}", i)
        late = Board([address], "late", timeout_s=10.0)
        started = time.monotonic()
        with pytest.raises(TooManyConnections) as caught:
            late.put("cap/late", 0)
        # Its only endpoint refused: raised at once, not after the 10 s deadline.
        assert time.monotonic() - started < 5.0
        assert caught.value.limit == CAP
        assert isinstance(caught.value, Unavailable)  # retrying later is safe
        message = str(caught.value)
        assert f"at most {CAP} client connections" in message, message
        assert address in message and "connections_max" in message

        # A long poll (its own connection while it waits) says the same when its time is up.
        with pytest.raises(TooManyConnections):
            asyncio.run(late.wait_events("cap/", 0, timeout_s=1.0))

        # The connections already open are unaffected.
        for i, board in enumerate(held):
            entry = board.get(f"cap/{i}")
            assert entry is not None and entry.value == i
            board.put(f"cap/again-{i}", i)

        # The command line exits "unavailable" (5) and names the cap.
        code = cli_main(["get", "cap/0", "--endpoints", address, "--timeout", "5"])
        assert code == EXIT_UNAVAILABLE
        assert f"at most {CAP} client connections" in capsys.readouterr().err

        # A client given every endpoint tries the others (followers point it back to the
        # leader) until its deadline, then says why: the leader's cap, typed.
        everywhere = Board(list(cluster.endpoints), "everywhere", timeout_s=2.0)
        with pytest.raises(TooManyConnections):
            everywhere.put("cap/everywhere", 0)
        everywhere.close()

        # Closing one connection makes room for the next.
        held.pop().close()

        def admitted() -> bool:
            try:
                late.put("cap/late", 1)
            except TooManyConnections:
                return False
            return True

        wait_until(admitted, what="a freed connection to admit the late Board")
        held.append(late)
    finally:
        for board in held:
            board.close()


def test_the_settings_are_checked_on_the_command_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value is refused before anything starts, naming the option."""
    serve = ["serve", "--raft-address", "127.0.0.1:9", "--client-address", "127.0.0.1:9",
             "--data-dir", str(tmp_path / "never")]
    assert cli_main([*serve, "--connections-max", "0"]) == EXIT_USAGE
    assert "--connections-max" in capsys.readouterr().err
    assert cli_main([*serve, "--watch-buffer-bytes", "10"]) == EXIT_USAGE
    assert "--watch-buffer-bytes" in capsys.readouterr().err
    assert cli_main([*serve, "--poll-spin-us", "-1"]) == EXIT_USAGE
    assert "--poll-spin-us" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    with pytest.raises(InvalidCommand, match="connections_max must be an integer"):
        LocalCluster(replicas=1, data_dir=tmp_path / "up", connections_max=0)
    with pytest.raises(InvalidCommand, match="watch_buffer_bytes must be an integer"):
        LocalCluster(replicas=1, data_dir=tmp_path / "up", watch_buffer_bytes=True)
    with pytest.raises(InvalidCommand, match="poll_spin_us must be an integer"):
        LocalCluster(replicas=1, data_dir=tmp_path / "up", poll_spin_us=20_000)
    assert not (tmp_path / "up").exists()


def test_the_cap_is_one_more_kind_of_handshake_refusal() -> None:
    """The cap travels in the handshake's refusal frame (no parallel path): a client channel
    raises the typed error with the cap; the raft port, which has no cap, reads the same frame
    as a plain refusal."""
    frame = refusal_frame(TooManyConnections("at the cap", limit=7))
    client = Channel(None, new_nonce(), initiator=True, label=CLIENT_LABEL)
    client.hello("agent:a")
    with pytest.raises(TooManyConnections) as caught:
        client.accept_hello(frame)
    assert caught.value.limit == 7 and "at most 7 client connections" in str(caught.value)
    raft = Channel(None, new_nonce(), initiator=True, label=RAFT_LABEL)
    raft.hello("raft:a")
    with pytest.raises(AuthError) as refused:
        raft.accept_hello(frame)
    assert not refused.value.secret_mismatch
