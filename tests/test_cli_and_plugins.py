"""The quorumboard command against a live cluster (exit codes, --json), and custom policies
loaded into every replica process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumboard.consensus import LocalCluster, PolicyRejected, UnknownPolicy

PLUGINS = str(Path(__file__).parent / "plugins")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", PLUGINS)
    try:
        with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("cli"),
                          policy_modules=["even_policy"]) as c:
            yield c
    finally:
        mp.undo()


def qb(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorumboard.consensus.cli", *args[:1], "--endpoints",
         ",".join(cluster.endpoints), "--timeout", "10", *args[1:]],
        capture_output=True, text=True, timeout=60, check=False)


def test_cli_exit_codes_and_json(cluster: LocalCluster) -> None:
    r = qb(cluster, "put", "cli/a", '{"n": 1}', "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 1
    assert qb(cluster, "put", "cli/a", '{"n": 2}', "--expect-version", "1").returncode == 0
    stale = qb(cluster, "put", "cli/a", '{"n": 3}', "--expect-version", "1", "--json")
    assert stale.returncode == 3
    assert json.loads(stale.stdout)["current"]["version"] == 2
    assert qb(cluster, "get", "cli/missing").returncode == 4
    got = qb(cluster, "get", "cli/a")
    assert got.returncode == 0 and '"n": 2' in got.stdout and "version 2" in got.stdout
    listed = qb(cluster, "ls", "cli/", "--json")
    assert [e["key"] for e in json.loads(listed.stdout)] == ["cli/a"]
    hist = qb(cluster, "history", "cli/a", "--json")
    assert [h["outcome"] for h in json.loads(hist.stdout)] == ["put", "put", "rejected"]
    human = qb(cluster, "history", "cli/a")  # the human form of a history with a refusal
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 3 and "put" in lines[0] and "version 1" in lines[0], lines
    assert "rejected" in lines[2] and "by" in lines[2] and "reject-stale" in lines[2], lines
    watched = qb(cluster, "watch", "cli/", "--start-revision", "1", "--count", "2", "--json")
    assert [json.loads(line)["entry"]["version"] for line in watched.stdout.splitlines()] == [1, 2]
    status = qb(cluster, "status", "--json")
    assert json.loads(status.stdout)["role"] in ("leader", "follower")
    assert qb(cluster, "put", "bad//key", "1").returncode == 6
    down = subprocess.run([sys.executable, "-m", "quorumboard.consensus.cli", "get", "x", "--endpoints",
                           "127.0.0.1:9", "--timeout", "1"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert down.returncode == 5


def test_cli_auth_failure_exits_9_at_once(tmp_path: Path) -> None:
    """A wrong secret is exit code 9 (not 5, which scripts retry), with the reason on stderr;
    the timeout is long, so a client that retried until its deadline would fail the test's
    own timeout rather than pass."""
    with LocalCluster(replicas=1, data_dir=tmp_path, secret="the-right-secret-0123456789",
                      log_level="warning") as secured:
        r = subprocess.run(
            [sys.executable, "-m", "quorumboard.consensus.cli", "get", "x", "--endpoints",
             ",".join(secured.endpoints), "--timeout", "600"],
            env={**os.environ, "QUORUMBOARD_SECRET": "a-wrong-secret-0123456789"},
            capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 9, (r.returncode, r.stderr)
    assert "AuthError" in r.stderr and "secret" in r.stderr


def test_custom_policy_in_every_replica(cluster: LocalCluster) -> None:
    board = cluster.board(agent="plugin-user")
    board.set_policy("even/", "even-only")
    assert board.put("even/x", 2).value == 2
    with pytest.raises(PolicyRejected) as info:
        board.put("even/x", 3, expect_version=1)
    assert info.value.policy == "even-only" and info.value.reason == "odd"
    with pytest.raises(UnknownPolicy):
        board.set_policy("odd/", "odd-only")
    cluster.wait_converged()
