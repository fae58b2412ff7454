"""Agent teams on the replicated blackboard, and experiments that measure them like clusters.

An agent is an identity, a ``consensus.Board`` and a *brain* (simulated and calibrated, or an
OpenAI-compatible LLM) that turns its watched view of the board into actions; coordination
modes decide who does which task; a sweep runs teams over task DAGs on a real local cluster and
reports speedup against Amdahl's law, coordination cost, conflicts and recovery::

    from quorumboard.agents import SweepConfig, load_projects, run_sweep
    from quorumboard.agents.study.report import write_report

    projects = load_projects("../shared/paper-tasks")
    run_sweep(SweepConfig(modes=("preassign", "decentralized"), reps=2), projects, out)
    write_report(out)

Imports ``consensus`` only through its public API.
"""

from quorumboard.agents.brains.llm import LLMConfig, OpenAIBrain, check_source
from quorumboard.agents.brains.sim import PROFILES, Brain, BrainProfile, SimBrain
from quorumboard.agents.study.experiment import (
    SweepConfig,
    expand,
    load_tasks,
    read_results,
    run_sweep,
)
from quorumboard.agents.study.metrics import (
    CellRow,
    RunMetrics,
    RunRecord,
    amdahl,
    cell_rows,
    fit_serial_fraction,
    karp_flatt,
    run_metrics,
)
from quorumboard.agents.team.actions import (
    Action,
    Assign,
    ClaimTask,
    CompleteTask,
    FileView,
    Idle,
    Message,
    Reply,
    TaskView,
    View,
    WriteFile,
    parse_action,
)
from quorumboard.agents.team.events import EventLog, RunEvent, read_events
from quorumboard.agents.team.modes import MODES, Mode, RunContext, get_mode, register_mode
from quorumboard.agents.team.runner import BrainFactory, TeamEnv, run_team, sim_brains
from quorumboard.agents.team.spec import AgentFault, BoardFault, RunSpec
from quorumboard.agents.team.tasks import (
    Project,
    Task,
    TaskFileError,
    critical_path,
    generate_project,
    load_project,
    load_projects,
)
from quorumboard.agents.team.teamboard import Actor, Layout, ViewCache

__all__ = [
    "MODES",
    "PROFILES",
    "Action",
    "Actor",
    "AgentFault",
    "Assign",
    "BoardFault",
    "Brain",
    "BrainFactory",
    "BrainProfile",
    "CellRow",
    "ClaimTask",
    "CompleteTask",
    "EventLog",
    "FileView",
    "Idle",
    "LLMConfig",
    "Layout",
    "Message",
    "Mode",
    "OpenAIBrain",
    "Project",
    "Reply",
    "RunContext",
    "RunEvent",
    "RunMetrics",
    "RunRecord",
    "RunSpec",
    "SimBrain",
    "SweepConfig",
    "Task",
    "TaskFileError",
    "TaskView",
    "TeamEnv",
    "View",
    "ViewCache",
    "WriteFile",
    "amdahl",
    "cell_rows",
    "check_source",
    "critical_path",
    "expand",
    "fit_serial_fraction",
    "generate_project",
    "get_mode",
    "karp_flatt",
    "load_project",
    "load_projects",
    "load_tasks",
    "parse_action",
    "read_events",
    "read_results",
    "register_mode",
    "run_metrics",
    "run_sweep",
    "run_team",
    "sim_brains",
]

# The report needs the optional plotting and statistics packages (the "experiment" extra), so it
# is imported on first use: ``from quorumboard.agents.study.report import write_report``.
