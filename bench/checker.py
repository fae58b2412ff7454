"""How fast the linearizability checker decides a large history, against the reference engine.

    python -m bench.checker                      # 20,000 operations, 16 clients, 10 keys
    python -m bench.checker --ops 20000 --clients 16 --keys 10 --info-rate 0.01 --seed 7
    python -m bench.checker --campaign           # a synthetic one-hour campaign (1.1M ops)
    python -m bench.checker --history /tmp/c23   # a recorded chaos run (its history.jsonl)

Histories are simulated (:func:`simulate`): each client runs operations back to back with
random think times and durations; each operation takes effect at a random instant inside its
interval, so the history is linearizable by construction and as concurrent as real clients make
it. With stalls (``--stall-every-s``), every so often the cluster stops answering for
``--stall-s`` seconds, as under a nemesis: every operation invoked then completes only when the
stall ends (16 clients all in flight on 10 keys at once), and a share of the writes invoked in
it (``--lost-share``) is lost — recorded as indeterminate, never applied — the two things that
make a campaign's history hard to check. ``--campaign`` is the one-hour campaign's shape: 16
clients at 300 operations/s in total over 10 keys, a 2 s stall every 10 s, some writes lost,
1.1 million operations (:data:`CAMPAIGN`). One run checks the history (verdict ``ok``), then checks a copy
with one planted stale read (verdict ``violation``, with the failing window). The baseline is
one sequential replay of the model in linearization order: the floor any checker pays to look
at every operation once. Figures are process CPU seconds (one core) and wall seconds.

With ``--reference`` the reference engine (``engine="wgl"``: the depth-first search the checker
used before, kept in consensus/testing/checker.py) is timed on the same history in the same
invocation, within ``--time-limit-s``; it is on by default for recorded histories (``--history``)
and for simulated ones up to 300,000 operations (its memo grows with the square of a key's
history).

With ``--history DIR`` it times the checker on a real campaign instead: the history a
``quorumboard chaos --out DIR`` run recorded, read and converted exactly as the run's own check
does (``read_history``, then the workload's ``convert``), then checked, then checked again with
one planted stale read (cas-register only: the negative control must still be caught). Each
stage is timed separately, in CPU and wall seconds, with ``--time-limit-s`` as the checker's
budget (the chaos run's is 60 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

from quorumboard.consensus.testing.checker import (
    UNKNOWN,
    CasRegister,
    CheckResult,
    Engine,
    Model,
    Operation,
    check_operations,
)


def simulate(ops_total: int, clients: int, keys: int, seed: int,
             info_rate: float = 0.0, *, think_s: float = 0.0005, duration_s: float = 0.003,
             stall_every_s: float = 0.0, stall_s: float = 3.0, lost_share: float = 0.0
             ) -> tuple[list[Operation], list[Operation]]:
    """A linearizable compare-and-set register history; returns it and its linearization (the
    operations that took effect, in order; lost writes are in the history only). See the module
    docstring for stalls and lost writes."""
    rnd = random.Random(seed)
    clock = [0.0] * clients
    planned = []
    for i in range(ops_total):
        c = i % clients
        call = clock[c] + rnd.expovariate(1 / think_s)
        duration = rnd.expovariate(1 / duration_s)
        lost = False
        if stall_every_s > 0 and call % stall_every_s < stall_s:  # invoked during a stall
            stall_end = call - call % stall_every_s + stall_s
            duration = stall_end - call + duration
            lost = rnd.random() < lost_share
        clock[c] = call + duration
        point = call + rnd.random() * duration
        planned.append((point, i, c, f"k{rnd.randrange(keys)}", call, call + duration, lost))
    planned.sort()
    state: dict[str, tuple[int, Any]] = {}
    order: list[Operation] = []
    history: list[Operation] = []
    for _point, i, c, key, call, ret, lost in planned:
        version, value = state.get(key, (0, None))
        inp: tuple[Any, ...]
        out: Any
        if rnd.random() < 0.5 and not lost:
            inp, out = ("read",), (version, value)
        else:
            expect = version if rnd.random() < 0.7 else max(0, version - 1)
            new = rnd.randrange(1_000_000)
            inp = ("cas", expect, new)
            if lost:  # the request was lost: it never applied, and its client never heard
                history.append(Operation(i, f"c{c}", key, inp, UNKNOWN, call, math.inf))
                continue
            if expect == version:
                state[key] = (version + 1, new)
                out = ("ok", version + 1)
            else:
                out = ("conflict", version)
        order.append(Operation(i, f"c{c}", key, inp, out, call, ret))
    history += [dataclasses.replace(op, output=UNKNOWN, ret=math.inf)
                if rnd.random() < info_rate else op for op in order]
    history.sort(key=lambda op: op.id)
    return history, order


CAMPAIGN: dict[str, Any] = dict(
    ops_total=1_100_000, clients=16, keys=10, info_rate=0.0001, think_s=16 / 300,
    duration_s=0.02, stall_every_s=10.0, stall_s=2.0, lost_share=0.002)
"""The one-hour campaign's shape (``quorumboard chaos --clients 16 --rate 300 --duration 3600``,
a fault every 5 s, about half of them stopping the cluster for a few seconds): 16 clients, 300
operations/s, 10 keys, a 2 s stall every 10 s, 0.2% of stalled writes lost and 0.01% of the
operations indeterminate after applying (a recorded 8-minute campaign had 7 indeterminate
operations in 202,124: this has several times more)."""


def plant_stale_read(history: list[Operation]) -> list[Operation]:
    """A copy where one read returns "absent" although a successful write completed before it
    began (versions never go back without a delete): a stale read no order can explain."""
    created: dict[str, float] = {}
    for op in sorted(history, key=lambda o: o.ret):
        if op.input[0] == "cas" and not op.indeterminate and op.output[0] == "ok":
            created.setdefault(op.key, op.ret)
    for j, op in enumerate(history):
        if (op.input[0] == "read" and not op.indeterminate and op.key in created
                and created[op.key] < op.call):
            bad = list(history)
            bad[j] = dataclasses.replace(op, output=(0, None))
            return bad
    raise ValueError("no read after a completed create to make stale")


def replay(order: list[Operation]) -> int:
    """The baseline: apply the model once per operation in linearization order."""
    model = CasRegister()
    states: dict[str, Any] = {}
    accepted = 0
    for op in order:
        ok, states[op.key] = model.step(states.get(op.key, model.init()), op)
        accepted += ok
    return accepted


@dataclasses.dataclass
class Timed:
    """One stage's CPU (this process, one core) and wall seconds."""

    cpu_s: float = 0.0
    wall_s: float = 0.0


class _Clock:
    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()

    def stop(self) -> Timed:
        return Timed(time.process_time() - self.cpu0, time.monotonic() - self.wall0)


REFERENCE_OPS_MAX = 300_000
"""Above this many operations the reference engine is not run unless asked (``--reference``):
its memo keeps a bitmask of the key's operations per entry, quadratic in memory."""


def _verdict_of(result: CheckResult) -> dict[str, Any]:
    return {"verdict": result.verdict,
            "keys": [{"key": k.key, "verdict": k.verdict, "operations": k.operations,
                      "steps": k.steps, **({"reason": k.reason} if k.reason else {})}
                     for k in result.keys]}


def time_checks(ops: list[Operation], model: Model[Any], time_limit_s: float,
                engine: Engine, planted: bool) -> dict[str, Any]:
    """Check ``ops`` with ``engine`` within ``time_limit_s`` (wall, as a chaos run limits it),
    and, with ``planted``, a copy with one planted stale read; CPU and wall seconds of each."""

    def limited(history: list[Operation]) -> dict[str, Any]:
        clock = _Clock()
        deadline = time.monotonic() + time_limit_s
        result = check_operations(history, model, engine=engine,
                                  should_stop=lambda: time.monotonic() > deadline)
        return {**dataclasses.asdict(clock.stop()), **_verdict_of(result),
                "window_operations": [len(k.window) for k in result.violations]}

    out = {"check": limited(ops)}
    if planted:
        out["planted_stale_read"] = limited(plant_stale_read(ops))
    return out


def check_recorded(run: Path, time_limit_s: float, reference: bool | None = None
                   ) -> dict[str, Any]:
    """Time the checker on a recorded chaos run (its directory, or its ``history.jsonl``):
    read, convert, check, and check with a planted stale read, then the same with the reference
    engine (``reference``; default: for histories up to :data:`REFERENCE_OPS_MAX` operations);
    the figures as a dict."""
    from quorumboard.consensus.testing import Scenario, read_history
    from quorumboard.consensus.testing.history import to_operations
    from quorumboard.consensus.testing.workload import WORKLOADS

    path = run / "history.jsonl" if run.is_dir() else run
    scenario_path = path.parent / "scenario.json"
    scenario = (Scenario.model_validate_json(scenario_path.read_text())
                if scenario_path.exists() else Scenario())
    workload = WORKLOADS[scenario.workload]()

    clock = _Clock()
    records, note = read_history(path)
    read = clock.stop()
    clock = _Clock()
    ops = to_operations(records, workload.convert)
    convert = clock.stop()
    planted = scenario.workload == "cas-register"
    out: dict[str, Any] = {
        "history": str(path), "workload": scenario.workload, "records": len(records),
        "reader_note": note, "operations": len(ops),
        "indeterminate": sum(op.indeterminate for op in ops),
        "keys": len({op.key for op in ops}), "time_limit_s": time_limit_s,
        "read": dataclasses.asdict(read), "convert": dataclasses.asdict(convert),
        **time_checks(ops, workload.model(), time_limit_s, "frontier", planted),
    }
    if reference if reference is not None else len(ops) <= REFERENCE_OPS_MAX:
        out["reference"] = time_checks(ops, workload.model(), time_limit_s, "wgl", planted)
    return out


def _print_checks(figures: dict[str, Any], engine: str) -> None:
    runs = [("check", figures["check"])]
    if "planted_stale_read" in figures:
        runs.append(("check, planted stale read", figures["planted_stale_read"]))
    for label, c in runs:
        steps = sorted((k["steps"] for k in c["keys"]), reverse=True)
        window = f", failing window of {c['window_operations']}" if c["window_operations"] else ""
        print(f"{label + ' (' + engine + '):':<38} {c['cpu_s']:7.2f} s CPU {c['wall_s']:7.2f} s "
              f"wall  verdict {c['verdict']}{window}  (steps per key, largest first: "
              f"{', '.join(f'{x:,}' for x in steps[:3])})")


def _print_all_checks(fig: dict[str, Any]) -> None:
    _print_checks(fig, "frontier")
    if "reference" in fig:
        _print_checks(fig["reference"], "reference wgl")


def _print_recorded(fig: dict[str, Any]) -> None:
    print(f"history: {fig['history']} ({fig['workload']}): {fig['records']:,} records, "
          f"{fig['operations']:,} operations over {fig['keys']} keys, "
          f"{fig['indeterminate']} indeterminate{'; ' + fig['reader_note'] if fig['reader_note'] else ''}")
    print(f"{'read (read_history):':<38} {fig['read']['cpu_s']:7.2f} s CPU "
          f"{fig['read']['wall_s']:7.2f} s wall")
    print(f"{'convert (workload.convert):':<38} {fig['convert']['cpu_s']:7.2f} s CPU "
          f"{fig['convert']['wall_s']:7.2f} s wall")
    _print_all_checks(fig)


def _succeeded(fig: dict[str, Any]) -> bool:
    """The new engine decided the history and caught the planted bug."""
    bad = fig.get("planted_stale_read", {"verdict": "violation"})["verdict"]
    return bool((fig["check"]["verdict"], bad) == ("ok", "violation"))


def main_recorded(run: Path, time_limit_s: float, out: Path, reference: bool | None) -> int:
    if not (run / "history.jsonl").exists() and not run.is_file():
        print(f"{run}: no history.jsonl (give a `quorumboard chaos --out` directory or its "
              "history file)", file=sys.stderr)
        return 2
    fig = check_recorded(run, time_limit_s, reference)
    _print_recorded(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bench.checker --history", **fig}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if _succeeded(fig) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checker")
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--info-rate", type=float, default=0.01,
                        help="share of operations made indeterminate (timed out, applied)")
    parser.add_argument("--think-s", type=float, default=0.0005)
    parser.add_argument("--duration-s", type=float, default=0.003)
    parser.add_argument("--stall-every-s", type=float, default=0.0)
    parser.add_argument("--stall-s", type=float, default=3.0)
    parser.add_argument("--lost-share", type=float, default=0.0,
                        help="share of the writes invoked in a stall that are lost")
    parser.add_argument("--campaign", action="store_true",
                        help="the one-hour campaign's shape (overrides the flags above)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/checker.json"))
    parser.add_argument("--history", type=Path, default=None,
                        help="time the checker on a recorded chaos run (its --out directory)")
    parser.add_argument("--time-limit-s", type=float, default=600.0,
                        help="each check's time budget (a chaos run gives it 60 s)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the reference engine (default: up to "
                        f"{REFERENCE_OPS_MAX:,} operations)")
    args = parser.parse_args(argv)
    if not 0 < args.time_limit_s <= 86_400:
        parser.error("--time-limit-s in (0, 86400]")
    if args.history is not None:
        return main_recorded(args.history, args.time_limit_s, args.out, args.reference)
    shape: dict[str, Any] = dict(CAMPAIGN) if args.campaign else dict(
        ops_total=args.ops, clients=args.clients, keys=args.keys, info_rate=args.info_rate,
        think_s=args.think_s, duration_s=args.duration_s, stall_every_s=args.stall_every_s,
        stall_s=args.stall_s, lost_share=args.lost_share)
    if not (1 <= shape["ops_total"] <= 2_000_000 and 1 <= shape["clients"] <= 1024
            and shape["keys"] >= 1 and 0 <= shape["info_rate"] < 1
            and 0 <= shape["lost_share"] < 1 and shape["think_s"] > 0
            and shape["duration_s"] > 0 and shape["stall_every_s"] >= 0
            and (shape["stall_every_s"] == 0 or 0 < shape["stall_s"] < shape["stall_every_s"])):
        parser.error("--ops 1..2M, --clients 1..1024, --keys >= 1, --info-rate and "
                     "--lost-share in [0, 1), positive times")
    clock = _Clock()
    history, order = simulate(**shape, seed=args.seed)
    simulated = clock.stop()

    t0 = time.process_time()
    accepted = replay(order)
    baseline_s = time.process_time() - t0
    if accepted != len(order):
        print("harness bug: the simulated history does not replay", file=sys.stderr)
        return 1
    fig: dict[str, Any] = {
        "shape": shape, "seed": args.seed, "operations": len(history),
        "indeterminate": sum(op.indeterminate for op in history),
        "lost_writes": len(history) - len(order), "time_limit_s": args.time_limit_s,
        "simulate": dataclasses.asdict(simulated), "baseline_cpu_s": baseline_s,
        **time_checks(history, CasRegister(), args.time_limit_s, "frontier", True)}
    reference = args.reference if args.reference is not None else \
        len(history) <= REFERENCE_OPS_MAX
    if reference:
        fig["reference"] = time_checks(history, CasRegister(), args.time_limit_s, "wgl", True)
    print(f"history: {len(history):,} operations, {shape['clients']} clients, "
          f"{shape['keys']} keys, {fig['indeterminate']} indeterminate of which "
          f"{fig['lost_writes']} lost writes (seed {args.seed}"
          f"{', campaign shape' if args.campaign else ''})")
    print(f"{'baseline (one sequential replay):':<38} {baseline_s:7.2f} s CPU")
    _print_all_checks(fig)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "bench.checker", **fig}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if _succeeded(fig) else 1


if __name__ == "__main__":
    sys.exit(main())
