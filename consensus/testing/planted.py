"""The names of the bugs the harness can plant in replicas (negative controls).

Only names, so that a scenario or :class:`~quorumboard.consensus.cluster.LocalCluster` can
check one without loading a replica; what each bug does, and the subclasses that plant it, are
in :mod:`quorumboard.consensus.testing.replica`.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["PLANTED_BUGS", "PLANTED_BUG_ENV", "PlantedBug"]

PlantedBug = Literal["stale-reads", "unconfirmed-reads", "retry-bypass", "watch-gap",
                     "divergent-apply", "fence-bypass", "lost-write", "unsynced-acks"]
PLANTED_BUGS: Final = frozenset(get_args(PlantedBug))
PLANTED_BUG_ENV: Final = "QUORUMBOARD_PLANTED_BUG"
"""Read by the harness's replica entry point only, when no ``--planted-bug`` is given."""
