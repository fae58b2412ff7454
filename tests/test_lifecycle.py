"""Replicas never outlive the process that started them (issue: orphaned replicas), and the
demo that starts them passes its own checks.

``quorumboard up`` stopped by SIGTERM or SIGHUP stops its replicas like Ctrl-C does, and a program
using ``LocalCluster`` that is SIGKILLed (no ``finally``, no atexit) leaves nothing behind: the
replicas notice by themselves, through the parent-death signal (Linux) and the lifeline pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import replicas_running_under, wait_until

from quorumboard.consensus import connect


def _kill_leftovers(path: Path) -> None:
    for pid in replicas_running_under(path):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _read_until(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for _ in range(200):  # bounded: the banner is a few lines
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise AssertionError(f"the program never printed {prefix!r} (exit {proc.poll()})")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_up_stops_its_replicas_on_sigterm_and_sighup(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "bb"
    # Start ``up`` with the default SIGHUP action whatever this process inherited (a CI job run
    # without a terminal may ignore SIGHUP, and ``up`` rightly keeps an ignored SIGHUP ignored).
    launcher = ("import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, "-m", "quorumboard.consensus.cli", "up",
         "--replicas", "3", "--data-dir", str(data), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        _read_until(proc, "endpoints: ")
        assert len(replicas_running_under(data)) == 3
        proc.send_signal(sig)
        assert proc.wait(60) == 0, f"up exits 0 after {sig.name}"
        # up waited for its replicas in stop(): none may be left, not even briefly.
        assert replicas_running_under(data) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_leftovers(data)


def test_nohup_up_survives_a_hangup(tmp_path: Path) -> None:
    """``nohup quorumboard up`` ignores SIGHUP; the handler that makes a hangup stop ``up`` must
    not override that choice."""
    data = tmp_path / "bb"
    proc = subprocess.Popen(
        ["nohup", sys.executable, "-m", "quorumboard.consensus.cli", "up", "--replicas", "1",
         "--data-dir", str(data), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        endpoints = _read_until(proc, "endpoints: ")
        proc.send_signal(signal.SIGHUP)
        board = connect(endpoints, agent="after-hangup", timeout_s=30)
        assert board.put("hup/x", 1).version == 1  # up and its replica are still serving
        board.close()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_leftovers(data)


_PROGRAM = textwrap.dedent("""
    import sys, threading
    from quorumboard.consensus import LocalCluster

    cluster = LocalCluster(replicas=3, data_dir=sys.argv[1], log_level="warning")
    # r2 restarted from a thread that then ends: Linux's parent-death signal belongs to that
    # thread, so only the lifeline can stop r2. r0 paused: no thread of it runs, so only the
    # parent-death signal (SIGKILL) can stop it.
    t = threading.Thread(target=cluster.restart, args=(2,))
    t.start()
    t.join()
    cluster.pause(0)
    print("READY", flush=True)
    threading.Event().wait()
""")


def test_local_cluster_replicas_exit_when_their_parent_is_sigkilled(tmp_path: Path) -> None:
    data = tmp_path / "bb"
    proc = subprocess.Popen([sys.executable, "-c", _PROGRAM, str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        _read_until(proc, "READY")
        assert len(replicas_running_under(data)) == 3
        proc.kill()
        proc.wait(10)
        wait_until(lambda: replicas_running_under(data) == [], timeout_s=30,
                   what="every replica to exit after its parent was SIGKILLed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_leftovers(data)


def test_the_demo_passes_its_own_checks(tmp_path: Path) -> None:
    """The README's first command: the demo's leader SIGKILL, restart, and the chaos harness's
    exactly-once and linearizability checks over its recorded history, all passing."""
    data = tmp_path / "demo"
    try:
        r = subprocess.run([sys.executable, "-m", "quorumboard.consensus.cli", "demo",
                            "--seconds", "4", "--agents", "3", "--data-dir", str(data)],
                           capture_output=True, text=True, timeout=240, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "SIGKILL the leader" in r.stdout and "restart r" in r.stdout
        assert "exactly-once: ok" in r.stdout and "linearizable: ok" in r.stdout
        digests = [line.split()[-1] for line in r.stdout.splitlines() if " digest " in line]
        assert len(digests) == 3 and len(set(digests)) == 1, r.stdout
        assert replicas_running_under(data) == []
    finally:
        _kill_leftovers(data)
