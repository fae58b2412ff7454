"""Replicas never outlive the process that started them.

A program that uses :class:`~quorumboard.consensus.LocalCluster` and is killed without running its
``finally`` (SIGKILL, or SIGTERM without a handler: what ``timeout``, ``docker stop`` and systemd
send) would otherwise leave its replica processes running, holding their ports and data dir.
Two mechanisms, because neither is enough alone:

* **The lifeline**: the parent holds the write end of a pipe for its whole life and each replica
  it starts inherits only the read end. The kernel closes the write end when the parent dies, how
  ever it dies, so the replica reads end-of-file and stops itself gracefully. The replica also
  checks that its parent pid is unchanged (a forked copy of the parent could hold the write end
  open). Works on every POSIX platform.
* **The parent-death signal** (Linux ``prctl(PR_SET_PDEATHSIG)``): the kernel itself delivers
  SIGKILL when the parent goes, even to a replica that is stopped (SIGSTOP: a paused replica runs
  no thread that could read the lifeline, and SIGKILL is the one signal a stopped process obeys).
  The journal is built to survive SIGKILL, so nothing acknowledged is lost. Linux ties the signal
  to the *thread* that started the child, so it is only asked for when the replica was started from
  the main thread (a fault-injection thread that restarts a replica and then ends must not take the
  replica with it); the lifeline covers the rest.

``quorumboard serve`` is the replica itself and has no parent to watch.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import sys
import threading
from collections.abc import Callable

import structlog

__all__ = ["Lifeline", "watch_parent"]

log = structlog.get_logger("quorumboard.consensus.replica.lifeline")

POLL_S = 1.0
"""How often the watcher re-checks the parent pid between lifeline reads."""
WATCH_ROUNDS_MAX = 2**62
"""Bound on the watcher's loop (it ends at the parent's death or the replica's stop)."""
_PR_SET_PDEATHSIG = 1


class Lifeline:
    """The parent's side: one pipe per parent, whose read end every child inherits."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()  # both non-inheritable by default (PEP 446)
        self.parent_pid = os.getpid()

    def child_args(self) -> list[str]:
        """Arguments for the replica entry point; pass ``pass_fds=(lifeline.read_fd,)``.

        In a forked copy of the parent the pipe is the parent's (it closes when the *parent*
        dies) and so is the pid: start a lifeline of this process's own."""
        if os.getpid() != self.parent_pid:
            self.close()
            self.read_fd, self._write_fd = os.pipe()
            self.parent_pid = os.getpid()
        args = ["--parent-pid", str(self.parent_pid), "--lifeline-fd", str(self.read_fd)]
        if threading.current_thread() is threading.main_thread():
            args.append("--parent-death-signal")
        return args

    def close(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0


def watch_parent(parent_pid: int, lifeline_fd: int | None, death_signal: bool,
                 on_death: Callable[[], None], stopped: threading.Event) -> threading.Thread:
    """The child's side: call ``on_death`` once the parent is gone (a daemon thread)."""
    if death_signal and not _set_parent_death_signal():
        log.warning("parent-death signal unavailable; relying on the lifeline")

    def gone() -> bool:
        return os.getppid() != parent_pid

    poller: select.poll | None = None
    if lifeline_fd is not None:
        # poll, not select: the fd number is inherited from the parent and may exceed 1023
        poller = select.poll()
        poller.register(lifeline_fd, select.POLLIN | select.POLLHUP)

    def run() -> None:
        nonlocal poller
        for _ in range(WATCH_ROUNDS_MAX):
            if stopped.is_set():
                return
            if gone():
                break
            if poller is None or lifeline_fd is None:
                stopped.wait(POLL_S)
                continue
            try:
                if poller.poll(POLL_S * 1000) and not os.read(lifeline_fd, 1):
                    break  # end of file: every write end is closed, the parent is gone
            except Exception as exc:  # never a reason to stop a replica: keep the pid check
                log.warning("lifeline unreadable; watching the parent pid only",
                            error=f"{type(exc).__name__}: {exc}")
                poller = None
        if not stopped.is_set():
            log.warning("the process that started this replica is gone: stopping",
                        parent_pid=parent_pid)
            on_death()

    thread = threading.Thread(target=run, name="parent-watch", daemon=True)
    thread.start()
    # The parent may have died before the signal was set or the thread started.
    if gone():
        on_death()
    return thread
