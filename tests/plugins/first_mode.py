"""A user's coordination mode for the CLI test: every task dealt to the first agent up front."""

from __future__ import annotations

from quorumboard.agents import Assign, Mode, RunContext, register_mode


@register_mode
class AllToFirst(Mode):
    name = "all-to-first-cli"
    self_claiming = False

    def setup(self, run: RunContext, t_s: float) -> None:
        for task in run.project.tasks:
            run.coordinator.execute(Assign(task=task.id, agent=run.team[0]), t_s, 0)
