"""``quorumboard serve`` (one replica of a multi-machine cluster, here three on loopback, with a
secret and fsync) and ``quorumboard up`` (a foreground local cluster), as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from quorumboard.consensus import connect
from quorumboard.consensus.client.board import _Link
from quorumboard.consensus.cluster import _free_ports as free_ports
from quorumboard.consensus.wire.protocol import ReplicaStatus, StatusReq

SECRET = "serve-test-shared-secret-0123456789"


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(15))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(15)
            codes.append(None)
    return codes


class _Serve:
    """Three ``quorumboard serve`` processes wired to each other."""

    def __init__(self, root: Path) -> None:
        ports = free_ports(6, "127.0.0.1")
        self.raft = [f"127.0.0.1:{p}" for p in ports[:3]]
        self.client = [f"127.0.0.1:{p}" for p in ports[3:]]
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = [self._spawn(i) for i in range(3)]

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "quorumboard.consensus.cli", "serve", "--name", f"m{i}",
                "--raft-address", self.raft[i], "--client-address", self.client[i],
                "--data-dir", str(self.root / f"m{i}"), "--fsync", "--log-level", "warning"]
        for j in range(3):
            if j != i:
                args += ["--peer", f"{self.raft[j]}={self.client[j]}"]
        log = open(self.root / f"m{i}.log", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(args, env={**os.environ, "QUORUMBOARD_SECRET": SECRET},
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def status(self, i: int) -> ReplicaStatus | None:
        try:
            link = _Link(self.client[i], SECRET.encode(), "test", timeout_s=1.0)
        except OSError:
            return None
        try:
            return link.request(lambda rid: StatusReq(id=rid, digest=True), 5.0).status
        except Exception:
            return None
        finally:
            link.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Serve]:
    cluster = _Serve(tmp_path)
    try:
        yield cluster
    finally:
        _stop(cluster.procs)


def test_serve_three_members_with_secret_and_fsync(served: _Serve) -> None:
    board = connect(",".join(served.client), agent="ops", secret=SECRET, timeout_s=30)
    for i in range(10):
        board.put(f"m/{i}", i)
    def leader_plus_one() -> int | None:  # 1-based so that member 0 is truthy
        for i in range(3):
            st = served.status(i)
            if st is not None and st.role == "leader":
                return i + 1
        return None

    victim = wait_until(leader_plus_one, what="a serving leader") % 3  # the leader's successor
    served.procs[victim].kill()
    served.procs[victim].wait(10)
    for i in range(10, 20):
        board.put(f"m/{i}", i)
    served.procs[victim] = served._spawn(victim)

    def converged() -> bool:
        sts = [served.status(i) for i in range(3)]
        return all(s is not None for s in sts) and len({s.digest for s in sts if s}) == 1 \
            and len({s.last_applied for s in sts if s}) == 1

    wait_until(converged, timeout_s=30, what="the restarted member to catch up")
    assert [e.value for e in board.list("m/")] == sorted(range(20), key=lambda i: f"m/{i}")
    board.close()
    assert _stop(served.procs) == [0, 0, 0], "serve exits 0 on SIGTERM"


def _ctrl_c_as_at_a_terminal() -> None:
    """The child starts with SIGINT at its default, as a program started at a terminal does: a
    test suite run in the background (``cmd &`` in a script) inherits SIGINT ignored, and a
    program started with SIGINT ignored rightly keeps ignoring Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_up_prints_endpoints_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "quorumboard.consensus.cli", "up", "--replicas", "1", "--data-dir",
         str(tmp_path / "up")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, preexec_fn=_ctrl_c_as_at_a_terminal)
    try:
        assert proc.stdout is not None
        endpoints = None
        for _ in range(50):  # bounded: the banner is a few lines
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("endpoints: "):
                endpoints = line.split(": ", 1)[1].strip()
                break
        assert endpoints, "up printed no endpoints"
        # Keep reading what up prints from here on, so a full pipe can never stall it (and
        # what it printed is in the failure message).
        rest: list[str] = []
        reader = threading.Thread(target=lambda: rest.extend(proc.stdout or ()), daemon=True)
        reader.start()
        board = connect(endpoints, agent="cli-user")
        assert board.put("up/x", {"ok": True}).version == 1
        assert board.get("up/x").value == {"ok": True}  # type: ignore[union-attr]
        board.close()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("up did not stop within 30 s of Ctrl-C; it printed:\n"
                                 + "".join(rest[-40:])) from None
        assert code == 0, "".join(rest[-40:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
