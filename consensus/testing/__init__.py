"""The harness that proves the board: network and clock fault layers, the nemesis, workloads,
recorded histories, the linearizability checker and property checks, chaos runs and their
pictures.

Testing helpers live here, apart from the client-facing API: importing
:mod:`quorumboard.consensus` (or starting a replica) never loads them.
"""

from quorumboard.consensus.testing.chaos import ChaosReport, Scenario, run_chaos
from quorumboard.consensus.testing.checker import (
    UNKNOWN,
    CasRegister,
    CheckResult,
    Counter,
    KeyResult,
    LwwRegister,
    Model,
    Operation,
    SetModel,
    check_operations,
)
from quorumboard.consensus.testing.history import (
    FaultEvent,
    HistoryWriter,
    OpRecord,
    read_faults,
    read_history,
)
from quorumboard.consensus.testing.jsonl import drop_torn_tail, read_jsonl
from quorumboard.consensus.testing.nemesis import Fault, FaultStep, Nemesis, NemesisConfig
from quorumboard.consensus.testing.netfaults import NetworkFaults
from quorumboard.consensus.testing.powercut import PowerCutCluster, cut_power
from quorumboard.consensus.testing.workload import CasRegisterWorkload

__all__ = [
    "UNKNOWN",
    "CasRegister",
    "CasRegisterWorkload",
    "ChaosReport",
    "CheckResult",
    "Counter",
    "Fault",
    "FaultEvent",
    "FaultStep",
    "HistoryWriter",
    "KeyResult",
    "LwwRegister",
    "Model",
    "Nemesis",
    "NemesisConfig",
    "NetworkFaults",
    "OpRecord",
    "Operation",
    "PowerCutCluster",
    "Scenario",
    "SetModel",
    "check_operations",
    "cut_power",
    "drop_torn_tail",
    "read_faults",
    "read_history",
    "read_jsonl",
    "run_chaos",
]
