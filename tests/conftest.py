"""Suite-wide rules: pickle is forbidden everywhere, every test file belongs to one tier, and
cluster helpers.

Tiers are markers, one per test file (``TIERS`` below), so each runs alone: ``pytest -m unit``
(pure, no process started), ``static`` (ruff, mypy, a fresh install), ``cluster``, ``stateful``,
``chaos``, ``proofs`` (SPIN and z3), ``agents``, ``adapters``, ``dashboard``. The default run
is all of them.
A new test file must be given a tier here, or collection fails.

The whole suite runs with ``pickle.loads``/``pickle.load`` patched to raise, in this process and
in every replica process (a replica process always forbids unpickling at start; the Raft test
replicas of tests/raft_replica_main.py do when ``QUORUMBOARD_FORBID_PICKLE=1``): if any path of
quorumboard unpickled bytes, some test would fail.
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


TIERS: dict[str, str] = {
    **dict.fromkeys(["test_auth", "test_batching", "test_checker", "test_checks", "test_frames",
                     "test_journal", "test_jsonl", "test_leases_pure", "test_model", "test_policies",
                     "test_raft_rules", "test_server_deadlines", "test_state",
                     "test_state_bounds", "test_state_machine_props", "test_summary",
                     "test_workload_rules", "test_picture", "test_logs", "test_byte_bounds",
                     "test_watch_batches", "test_read_answers", "test_polling"],
                    "unit"),
    **dict.fromkeys(["test_static", "test_install"], "static"),
    **dict.fromkeys(["test_cluster", "test_raft", "test_hostile", "test_cli_and_plugins",
                     "test_cli_serve", "test_lifecycle", "test_list_many", "test_lone_replica",
                     "test_public_api_fuzz", "test_netfaults", "test_clock_faults",
                     "test_bench_smoke", "test_client_recovery", "test_reply_bounds", "test_put_path",
                     "test_connection_cap", "test_slow_watchers", "test_board_reads",
                     "test_shared_watches", "test_space_quota", "test_replica_start"],
                    "cluster"),
    "test_live_stateful": "stateful",
    **dict.fromkeys(["test_chaos", "test_nemesis", "test_workload", "test_negative_controls",
                     "test_read_index", "test_power_cut"], "chaos"),
    **dict.fromkeys(["test_metrics", "test_report", "test_llm_brain"], "agents"),
}
TIER_PREFIXES = {"test_proofs_": "proofs", "test_agents_": "agents", "test_study_": "agents",
                 "test_adapters_": "adapters", "test_dashboard_": "dashboard"}


def tier_of(path: Path) -> str:
    name = path.stem
    for prefix, tier in TIER_PREFIXES.items():
        if name.startswith(prefix):
            return tier
    if name not in TIERS:
        raise pytest.UsageError(f"{path.name} has no tier: add it to TIERS in tests/conftest.py")
    return TIERS[name]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, tier_of(Path(str(item.path)))))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Only the proofs tier needs SPIN (a Debian package, not a pip one): when a selected test
    is in it, install SPIN up front if it is missing and we are root, as ``quorumboard prove``
    does; otherwise those tests fail naming the command. Other tiers never touch apt."""
    if any(item.get_closest_marker("proofs") for item in session.items):
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


def leader_status(cluster: Any) -> Any:
    """The leader's ``ReplicaStatus`` (a ``LocalCluster``'s), once there is a leader."""
    leader = cluster.wait_for_leader()
    status = cluster.status()[leader]
    assert status is not None
    return status


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
