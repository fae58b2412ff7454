"""Suite-wide rules: pickle is forbidden everywhere, and cluster helpers.

The whole suite runs with ``pickle.loads``/``pickle.load`` patched to raise, in this process and
in every replica process (``QUORUMBOARD_FORBID_PICKLE=1``): if any path of quorumboard
unpickled bytes, some test would fail.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ["QUORUMBOARD_FORBID_PICKLE"] = "1"

T = TypeVar("T")


class PickleForbidden(AssertionError):
    pass


def _refuse(*_a: Any, **_k: Any) -> Any:
    raise PickleForbidden("pickle.loads/load called: quorumboard must never unpickle")


def pytest_configure(config: pytest.Config) -> None:
    """The proof tests need SPIN (a Debian package, not a pip one): install it up front when
    it is missing and we are root, as ``quorumboard prove`` does; otherwise those tests fail
    naming the command."""
    from quorumboard.proofs.run import ensure_spin

    ensure_spin()


@pytest.fixture(autouse=True, scope="session")
def _forbid_pickle() -> Iterator[None]:
    saved = (pickle.loads, pickle.load)
    pickle.loads = _refuse
    pickle.load = _refuse
    try:
        yield
    finally:
        pickle.loads, pickle.load = saved


def wait_until(predicate: Callable[[], T], timeout_s: float = 20.0, interval_s: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def replicas_running_under(path: Path) -> list[int]:
    """Pids of replica processes whose command line names ``path`` (their config lives there)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "quorumboard.consensus.replica" in cmdline and str(path) in cmdline:
            pids.append(int(entry.name))
    return pids
