"""What the dashboard serves: every JSON response is one of these models, so what reaches the
page is exactly these fields (no configuration, no secret, no raw replica reply)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from quorumboard.consensus.testing.summary import OpWindowStats  # a chaos run's window rows

__all__ = ["BlockView", "ChaosView", "ClaimRow", "ClaimsView", "ClusterView", "EventRow",
           "ExperimentView", "FindingRow", "KeyRow", "KeysView", "LeaseRow", "LeasesView",
           "PoliciesView", "PolicyRow", "ReplicaView", "SourceView"]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceView(_View):
    """What the page is looking at: a live cluster, or a run folder of one kind."""

    kind: Literal["live", "chaos", "experiment"]
    title: str


class ReplicaView(_View):
    """One replica as the last status poll saw it; ``up`` is false when it did not answer."""

    endpoint: str
    up: bool
    role: str = ""
    leader: bool = False
    term: int | None = None
    commit_index: int | None = None
    applied_index: int | None = None
    lag: int | None = None
    """Entries between the highest commit index any replica reported and this one's applied
    index: how far behind it is."""
    revision: int | None = None
    keys: int | None = None
    digest: str = ""
    has_quorum: bool | None = None
    error: str = ""


class ClusterView(_View):
    replicas: list[ReplicaView]
    leader: str | None
    """The client endpoint of the replica that says it leads (``None``: none does now)."""
    polled_at: float
    """Seconds since the epoch of the poll (the page shows how old the view is)."""
    poll_period_s: float


class KeyRow(_View):
    key: str
    version: int
    author: str
    lease: int | None
    mod_revision: int
    value: str
    """The value as JSON, cut to a preview (a key may hold up to a MiB)."""


class KeysView(_View):
    prefix: str
    revision: int
    keys: list[KeyRow]
    truncated: bool
    error: str = ""


class ClaimRow(_View):
    key: str
    owner: str
    fence: int
    lease: int
    ttl: float
    time_left_s: float | None


class ClaimsView(_View):
    claims: list[ClaimRow]
    truncated: bool
    error: str = ""


class LeaseRow(_View):
    id: int
    owner: str
    ttl: float
    time_left_s: float | None
    keys: int
    claims: list[str]
    refreshes: int


class LeasesView(_View):
    leases: list[LeaseRow]
    truncated: bool
    error: str = ""


class PolicyRow(_View):
    prefix: str
    name: str
    params: str
    """The policy's parameters as JSON."""


class PoliciesView(_View):
    policies: list[PolicyRow]
    error: str = ""


class EventRow(_View):
    """One committed change, as the live stream sends it (``data:`` of an SSE message)."""

    revision: int
    kind: str
    key: str
    author: str
    version: int
    cause: str
    value: str


class FindingRow(_View):
    check: str
    verdict: str
    detail: str


class ChaosView(_View):
    verdict: str
    linearizable: str
    converged: bool
    operations: int
    faults_injected: int
    problems: list[str]
    findings: list[FindingRow]
    explanation: str
    duration_s: float | None
    windows: list[OpWindowStats]
    timeline: str | None
    """The URL of the run's timeline picture (``None``: the folder has none)."""


class BlockView(_View):
    """One block of a report: a heading, a paragraph, a table (``rows``, the first is the
    header) or a plot (``src``)."""

    kind: Literal["heading", "text", "table", "plot"]
    text: str = ""
    level: int = 0
    rows: list[list[str]] = []
    src: str = ""


class ExperimentView(_View):
    title: str
    blocks: list[BlockView]
    plots: list[str]
    """Every plot's URL, also those the report does not place."""
