"""A replica whose client endpoint is slow to come up (its event loop busy, as while a long log
replays on a loaded machine) fails its start with the start error, not with an error of its own
error path. An hour-long chaos campaign found both: a restarted replica gave up after 10 s, then
its clean-up closed the still-running loop and raised ``Cannot close a running event loop``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from quorumboard.consensus.cluster import _free_ports
from quorumboard.consensus.replica.machine import Replica, ReplicaConfig
from quorumboard.consensus.replica.server import START_TIMEOUT_S, ClientServer

HOLD_S = 1.0
"""How long the test holds the endpoint's loop (bounded: the hold ends by itself)."""


def _config(tmp_path: Path) -> ReplicaConfig:
    raft, client = _free_ports(2, "127.0.0.1")
    return ReplicaConfig(name="r0", raft_address=f"127.0.0.1:{raft}",
                         client_address=f"127.0.0.1:{client}", data_dir=tmp_path / "r0",
                         log_level="warning")


def test_the_start_bound_outlasts_a_long_replay() -> None:
    assert START_TIMEOUT_S >= 60.0  # a loaded machine took over 10 s; see the constant


def test_a_slow_endpoint_fails_the_start_cleanly(tmp_path: Path) -> None:
    release = threading.Event()

    class HeldLoopServer(ClientServer):
        """The harness's fault: the loop is busy before the endpoint can listen."""

        def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
            self._loop.call_soon(release.wait, HOLD_S)
            super().start(timeout_s=0.2)

    class SlowReplica(Replica):
        server_class = HeldLoopServer

    replica = SlowReplica(_config(tmp_path))
    try:
        with pytest.raises(RuntimeError, match=r"did not start within 0\.2 s"):
            replica.start()
    finally:
        release.set()
