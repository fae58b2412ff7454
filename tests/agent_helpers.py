"""What the agent-team test modules share: one cluster per module and a run spec with defaults."""

from __future__ import annotations

from collections.abc import Iterator

from quorumboard.agents.team.runner import TeamEnv
from quorumboard.agents.team.spec import RunSpec
from quorumboard.agents.team.tasks import Project
from quorumboard.consensus import LocalCluster


def cluster_env(root: str) -> Iterator[TeamEnv]:
    """A 3-replica cluster with network faults and a team environment under ``root``; stopped
    when the generator is closed (use it as the body of a module-scoped fixture)."""
    with LocalCluster(replicas=3, log_level="warning", network_faults=True) as cluster:
        team_env = TeamEnv(endpoints=list(cluster.endpoints), root=root, cluster=cluster)
        try:
            yield team_env
        finally:
            team_env.close()


def spec_of(project: Project, **kw: object) -> RunSpec:
    """A decentralized lone-agent spec of ``project``, overridden by ``kw``. Board time is off
    by default: the run time of the brains alone is hand-computable and reproducible."""
    fields: dict[str, object] = {"suite": project.suite, "level": project.level,
                                 "p": project.parallel_fraction, "mode": "decentralized",
                                 "agents": 1, "seed": 7, "board_time": False}
    fields.update(kw)
    return RunSpec(**fields)  # type: ignore[arg-type]
