"""``quorumboard experiment run|ablate|report``: sweeps of agent teams on a local replicated board.

Exit codes: 0 done (every run recorded), 1 some runs failed to run (re-run the same command to
resume them), 2 usage or bad task files.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from quorumboard.agents.brains.sim import PROFILES
from quorumboard.agents.brains.study import STUDY_MODELS, load_calibration, parse_assumptions
from quorumboard.agents.brains.study_prompt import (
    StudyPrompt,
    load_study_prompt,
    our_prompt,
    study_chat_brains,
)
from quorumboard.agents.study.experiment import (
    EXPERIMENTS,
    Experiment,
    SweepConfig,
    dump_grid,
    expand,
    load_tasks,
    parse_range,
    read_records,
    run_sweep,
)
from quorumboard.agents.team.modes import MODES
from quorumboard.agents.team.runner import BrainFactory, sim_brains
from quorumboard.agents.team.spec import check_harness
from quorumboard.agents.team.study_harness import parse_fixes
from quorumboard.agents.team.tasks import TaskFileError
from quorumboard.consensus import configure_logging

__all__ = ["main"]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quorumboard experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run (or resume) a sweep of team runs")
    r.add_argument("--tasks", default=None,
                   help="task files: a folder of suites (the study's layout) or one .json")
    r.add_argument("--generate", default=None,
                   help="generated projects: subtasks:critical-path:extra-edges[:seed],...")
    r.add_argument("--modes", default="preassign,decentralized",
                   help="comma list of preassign, lead, decentralized, hybrid, or a mode a "
                        "--mode-module registers")
    r.add_argument("--mode-module", action="append", default=[], metavar="PKG.MOD",
                   help="import this module first (it calls agents.register_mode); repeatable")
    r.add_argument("--agents", default="1-5", help="team sizes: 1-5 or 1,2,4")
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--policy", default="last-writer-wins",
                   help="file conflict policies, comma list (last-writer-wins, reject-stale)")
    r.add_argument("--experiments", default="sweep",
                   help=f"comma list of {', '.join(EXPERIMENTS)}")
    r.add_argument("--brain", default="sim", choices=["sim", "openai"])
    r.add_argument("--model", default=None,
                   help="comma list (a grid dimension): simulated profiles (gpt-5.2, "
                        "claude-sonnet-4-6, gemini-3-flash-preview, exact; under --harness "
                        "study the first three, calibrated on the study's replies) or the "
                        "LLM's model name")
    r.add_argument("--harness", default="board", choices=["board", "study"],
                   help="whose rules: this toolkit's (board: leases, fencing, completion needs "
                        "dependencies and a passing write) or the study's orchestrator exactly "
                        "(study: rounds only, claims dependency-checked, completion checks "
                        "ownership only, edits -> claims -> completions -> tests in a reply)")
    r.add_argument("--assume", default="",
                   help="study brains' assumption knobs, e.g. pick_first=1,persist=0.5 "
                        "(pick_first, cooccur, persist, helper_share; reactions to --fix "
                        "feedback: phantom, heed, rewrite, adopt)")
    r.add_argument("--fix", default="",
                   help="--harness study: replace study rules by correct ones, comma list of "
                        "completion-deps, reject-stale-files, fenced-claims, claim-feedback "
                        "(or all)")
    r.add_argument("--base-url", default=None, help="OpenAI-compatible API, e.g. "
                   "http://127.0.0.1:8000/v1 (with --brain openai)")
    r.add_argument("--temperature", type=float, default=0.2)
    r.add_argument("--max-tokens", type=int, default=1024)
    r.add_argument("--timeout-s", type=float, default=60.0)
    r.add_argument("--retries", type=int, default=3)
    r.add_argument("--api-key-env", default="OPENAI_API_KEY")
    r.add_argument("--study-repo", default=None, metavar="PATH",
                   help="with --brain openai --harness study: read the teammate prompt from "
                        "this checkout of the study's repository (agents/prompts/"
                        "teammate_prompt.txt in the role text of agents/teammate_agent.py) "
                        "instead of this toolkit's own; each run records which (sha256)")
    r.add_argument("--sync", default="rounds", choices=["rounds", "async"])
    r.add_argument("--task-time", default="task", choices=["task", "reply"],
                   help="simulated brains: a reply doing a task's work (or claiming or "
                        "completing it) takes that task's own time, drawn once per run and "
                        "task whoever does it (task, the default), or a fresh latency draw per "
                        "reply (reply: the study's pure-latency semantics, under which racing "
                        "agents hedge and async teams can beat n and N/CP)")
    r.add_argument("--no-board-time", action="store_true",
                   help="leave the agents' measured board latency out of run time (runs are "
                        "then bit-for-bit reproducible, and board faults cost no run time)")
    r.add_argument("--round-cap", type=int, default=60)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--slowdown", type=float, default=4.0, help="straggler: k-times slower")
    r.add_argument("--stall-at-s", type=float, default=15.0)
    r.add_argument("--stall-s", type=float, default=600.0)
    r.add_argument("--board-fault-round", type=int, default=3,
                   help="board-fault: the round the leader is killed at")
    r.add_argument("--claim-ttl-s", type=float, default=60.0,
                   help="a claim whose owner has not replied for this long may be taken over")
    r.add_argument("--jobs", type=int, default=None,
                   help="runs at once (default 2; board-fault runs: 1). With --brain openai "
                        "the default is 1: runs sharing one endpoint slow each other's replies, "
                        "and reply latency is what run time is made of, so parallel LLM runs "
                        "contaminate each other's measurements")
    r.add_argument("--replicas", type=int, default=3)
    r.add_argument("--out", required=True)
    r.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    r.add_argument("--no-report", action="store_true", help="skip writing the report")
    a = sub.add_parser("ablate", help="the study harness, each fix alone and all together, "
                       "on the same seeds, with a stall experiment and sensitivity rows; "
                       "writes ablation.md")
    a.add_argument("--tasks", default=None, help="task files (as for run)")
    a.add_argument("--generate", default=None, help="generated projects (as for run)")
    a.add_argument("--model", default="gpt-5.2", help="comma list of study brains")
    a.add_argument("--modes", default="preassign,decentralized")
    a.add_argument("--agents", default="1,3,5", help="team sizes (1 is the speedup baseline)")
    a.add_argument("--reps", type=int, default=2)
    a.add_argument("--round-cap", type=int, default=60)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--stall-at-s", type=float, default=15.0)
    a.add_argument("--stall-s", type=float, default=600.0)
    a.add_argument("--claim-ttl-s", type=float, default=60.0)
    a.add_argument("--no-sensitivity", action="store_true",
                   help="skip the assumption rows (knobs of agents' reactions to feedback)")
    a.add_argument("--no-board-time", action="store_true")
    a.add_argument("--jobs", type=int, default=None)
    a.add_argument("--replicas", type=int, default=3)
    a.add_argument("--out", required=True)
    rep = sub.add_parser("report", help="summary table, plots and report.md of a sweep")
    rep.add_argument("dir")
    return p


def _prompt(args: argparse.Namespace) -> StudyPrompt | None:
    """LLM agents under the study harness: the teammate prompt (ours, or the study's own from
    ``--study-repo``); None for every other run. A bad checkout fails here, before any run."""
    if args.brain != "openai" or args.harness != "study":
        if args.study_repo:
            raise ValueError("--study-repo sets the LLM agents' prompt under the study "
                             "harness: it needs --brain openai and --harness study")
        return None
    return load_study_prompt(args.study_repo) if args.study_repo else our_prompt()


def _brains(args: argparse.Namespace, prompt: StudyPrompt | None) -> BrainFactory:
    if args.brain == "sim":
        return sim_brains
    from quorumboard.agents.brains.llm import LLMConfig

    if not args.base_url or not args.model:
        raise ValueError("--brain openai needs --base-url and --model")
    config = LLMConfig(base_url=args.base_url, model=args.model, temperature=args.temperature,
                       max_tokens=args.max_tokens, timeout_s=args.timeout_s,
                       retries_max=args.retries, api_key_env=args.api_key_env)
    return study_chat_brains(config, prompt)


def _jobs(args: argparse.Namespace) -> int:
    """Runs at once: 2 by default; 1 for LLM brains (one endpoint's load would leak into the
    measured latency of every run sharing it), unless ``--jobs`` says otherwise (warned)."""
    if args.brain != "openai":
        return 2 if args.jobs is None else int(args.jobs)
    if args.jobs is None:
        return 1
    if args.jobs > 1:
        print(f"warning: --jobs {args.jobs} with --brain openai: runs share the endpoint, so "
              "each run's measured reply latency (its run time) includes the others' load",
              file=sys.stderr)
    return int(args.jobs)


FILE_POLICIES = ("last-writer-wins", "reject-stale")
"""Policies a team's file writes can run under (the others need parameters or votes)."""


def _check(cfg: SweepConfig) -> None:
    """Refuse a grid that cannot run, before starting a cluster (exit 2, not N failed runs)."""
    unknown = [m for m in cfg.modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(unknown)} (known: {', '.join(MODES)})")
    bad = [p for p in cfg.policies if p not in FILE_POLICIES]
    if bad:
        raise ValueError(f"policy {', '.join(bad)} not usable for files "
                         f"(use {' or '.join(FILE_POLICIES)})")
    if cfg.assume and (cfg.harness != "study" or cfg.brain != "sim"):
        raise ValueError("--assume sets the study brains' knobs: it needs --harness study "
                         "and --brain sim")
    if cfg.brain == "sim":
        known = STUDY_MODELS if cfg.harness == "study" else tuple(PROFILES)
        missing = [m for m in cfg.models if m not in known]
        if missing or not cfg.models:
            raise ValueError(f"no simulated {'study brain' if cfg.harness == 'study' else 'profile'}"
                             f" {', '.join(missing) or '(none given)'} (known: {', '.join(known)})")
        if cfg.harness == "study":
            for m in cfg.models:  # a bad --assume fails here, before any cluster starts
                parse_assumptions(cfg.assume, load_calibration(m), "decentralized")
    wrong = [e for e in cfg.experiments if e not in EXPERIMENTS]
    if wrong:
        raise ValueError(f"unknown experiment(s) {', '.join(wrong)}")


def _run(args: argparse.Namespace) -> int:
    for module in args.mode_module:  # plug-in modes register themselves on import
        importlib.import_module(module)
    check_harness(args.harness, args.sync)  # a clear message before any grid is built
    projects = load_tasks(args.tasks, args.generate)
    prompt = _prompt(args)
    cfg = SweepConfig(
        modes=_csv(args.modes), agents=parse_range(args.agents), reps=args.reps,
        policies=_csv(args.policy), brain=args.brain,
        model=args.model or ("gpt-5.2" if args.brain == "sim" else ""),
        harness=args.harness, assume=args.assume, fixes=(parse_fixes(args.fix),),
        prompt=prompt.label if prompt is not None else "",
        sync=args.sync, task_time=args.task_time, board_time=not args.no_board_time,
        round_cap=args.round_cap, seed=args.seed,
        experiments=_csv(args.experiments),
        slowdown=args.slowdown, stall_at_s=args.stall_at_s, stall_s=args.stall_s,
        claim_ttl_s=args.claim_ttl_s, board_fault_round=args.board_fault_round)
    _check(cfg)
    if args.dry_run:
        print(dump_grid(cfg, projects))
        return 0
    out = Path(args.out)
    wanted = {spec.run_id for spec, _ in expand(cfg, projects)}
    total = len(wanted)
    print(f"{total} runs ({cfg.harness} harness): {len(projects)} projects x models "
          f"{','.join(cfg.models)} x modes {','.join(cfg.modes)} x agents "
          f"{','.join(map(str, cfg.agents))} x {cfg.reps} reps ({', '.join(cfg.experiments)}) "
          f"-> {out}", file=sys.stderr)
    records = run_sweep(cfg, projects, out, jobs=_jobs(args), replicas=args.replicas,
                        brains=_brains(args, prompt))
    if not args.no_report:
        from quorumboard.agents.study.report import write_report

        report = write_report(out)
        print(f"wrote {report}", file=sys.stderr)
    missing = len(wanted - {r.spec.run_id for r in records})
    if missing:
        print(f"{missing} runs did not finish; run the same command again to resume",
              file=sys.stderr)
        return 1
    return 0


def _ablate(args: argparse.Namespace) -> int:
    """Run the ablation grid (resumable, like ``run``) and write ``ablation.md``."""
    from quorumboard.agents.study.ablation import RULE_SETS, SENSITIVITY

    projects = load_tasks(args.tasks, args.generate)
    common = {"modes": _csv(args.modes), "reps": args.reps, "brain": "sim",
              "model": args.model, "harness": "study", "round_cap": args.round_cap,
              "seed": args.seed, "board_time": not args.no_board_time,
              "stall_at_s": args.stall_at_s, "stall_s": args.stall_s,
              "claim_ttl_s": args.claim_ttl_s}
    ns = parse_range(args.agents)
    configs = [SweepConfig(agents=ns, fixes=RULE_SETS, experiments=("sweep", "stall"),
                           clean_arms=False, **common)]
    if not args.no_sensitivity:
        teams = tuple(n for n in ns if n > 1)
        for fix, assume, _ in SENSITIVITY:
            exp: tuple[Experiment, ...] = ("stall",) if "adopt" in assume else ("sweep",)
            configs.append(SweepConfig(agents=teams, fixes=(fix,), assume=assume,
                                       experiments=exp, clean_arms=False, **common))
    for cfg in configs:
        _check(cfg)
    out = Path(args.out)
    total = len({spec.run_id for cfg in configs for spec, _ in expand(cfg, projects)})
    print(f"{total} runs (study harness, {len(RULE_SETS)} rule sets) -> {out}", file=sys.stderr)
    missing = 0
    for cfg in configs:
        wanted = {spec.run_id for spec, _ in expand(cfg, projects)}
        records = run_sweep(cfg, projects, out, jobs=2 if args.jobs is None else args.jobs,
                            replicas=args.replicas, brains=sim_brains)
        missing += len(wanted - {r.spec.run_id for r in records})
    print(f"wrote {write_ablation(out)}", file=sys.stderr)
    if missing:
        print(f"{missing} runs did not finish; run the same command again to resume",
              file=sys.stderr)
        return 1
    return 0


def write_ablation(out: Path) -> Path:
    """``ablation.md`` of the runs recorded in ``out/results.jsonl``."""
    from quorumboard.agents.study.ablation import ablation_report

    records, _ = read_records(out / "results.jsonl")
    path = out / "ablation.md"
    path.write_text("\n".join(ablation_report(records)) + "\n", encoding="utf-8")
    return path


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    # Unwind normally, so the local cluster's replica processes are stopped, not orphaned.
    raise SystemExit(143)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    configure_logging(os.environ.get("QUORUMBOARD_LOG_LEVEL", "warning"))
    try:
        if args.action == "run":
            return _run(args)
        if args.action == "ablate":
            return _ablate(args)
        from quorumboard.agents.study.report import write_report

        print(f"wrote {write_report(Path(args.dir))}")
        records, _ = read_records(Path(args.dir) / "results.jsonl")
        if any(r.spec.fix for r in records):
            print(f"wrote {write_ablation(Path(args.dir))}")
        return 0
    except (TaskFileError, ValueError, FileNotFoundError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # the report's plotting / statistics packages are an extra
        print(f"error: {exc.name or exc}: the report needs the experiment extra: "
              "pip install 'quorumboard[experiment]' (results.jsonl is kept; run "
              "'quorumboard experiment report DIR' after installing)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
