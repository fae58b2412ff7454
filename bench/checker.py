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


def _verdict_of(result: CheckResult) -> dict[str, Any]:
    return {"verdict": result.verdict,
            "keys": [{"key": k.key, "verdict": k.verdict, "operations": k.operations,
                      "steps": k.steps} for k in result.keys]}


def check_recorded(run: Path, time_limit_s: float) -> dict[str, Any]:
    """Time the checker on a recorded chaos run (its directory, or its ``history.jsonl``):
    read, convert, check, and check with a planted stale read; the figures as a dict."""
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

    def limited() -> CheckResult:
        deadline = time.monotonic() + time_limit_s
        return check_operations(ops_now, workload.model(),
                                should_stop=lambda: time.monotonic() > deadline)

    ops_now = ops
    clock = _Clock()
    good = limited()
    good_t = clock.stop()
    out: dict[str, Any] = {
        "history": str(path), "workload": scenario.workload, "records": len(records),
        "reader_note": note, "operations": len(ops),
        "indeterminate": sum(op.indeterminate for op in ops),
        "keys": len({op.key for op in ops}), "time_limit_s": time_limit_s,
        "read": dataclasses.asdict(read), "convert": dataclasses.asdict(convert),
        "check": {**dataclasses.asdict(good_t), **_verdict_of(good)},
    }
    if scenario.workload == "cas-register":
        ops_now = plant_stale_read(ops)
        clock = _Clock()
        bad = limited()
        bad_t = clock.stop()
        out["planted_stale_read"] = {**dataclasses.asdict(bad_t), **_verdict_of(bad),
                                     "window_operations": [len(k.window)
                                                           for k in bad.violations]}
    return out


def _print_recorded(fig: dict[str, Any]) -> None:
    print(f"history: {fig['history']} ({fig['workload']}): {fig['records']:,} records, "
          f"{fig['operations']:,} operations over {fig['keys']} keys, "
          f"{fig['indeterminate']} indeterminate{'; ' + fig['reader_note'] if fig['reader_note'] else ''}")
    print(f"read (read_history):          {fig['read']['cpu_s']:7.2f} s CPU "
          f"{fig['read']['wall_s']:7.2f} s wall")
    print(f"convert (workload.convert):   {fig['convert']['cpu_s']:7.2f} s CPU "
          f"{fig['convert']['wall_s']:7.2f} s wall")
    runs = [("check, as recorded", fig["check"])]
    if "planted_stale_read" in fig:
        runs.append(("check, planted stale read", fig["planted_stale_read"]))
    for label, c in runs:
        steps = sorted((k["steps"] for k in c["keys"]), reverse=True)
        print(f"{label + ':':<29} {c['cpu_s']:7.2f} s CPU {c['wall_s']:7.2f} s wall  "
              f"verdict {c['verdict']}  (steps per key, largest first: "
              f"{', '.join(f'{x:,}' for x in steps[:5])})")


def main_recorded(run: Path, time_limit_s: float, out: Path) -> int:
    if not (run / "history.jsonl").exists() and not run.is_file():
        print(f"{run}: no history.jsonl (give a `quorumboard chaos --out` directory or its "
              "history file)", file=sys.stderr)
        return 2
    fig = check_recorded(run, time_limit_s)
    _print_recorded(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bench.checker --history", **fig}, indent=2) + "\n")
    print(f"wrote {out}")
    bad = fig.get("planted_stale_read", {"verdict": "violation"})["verdict"]
    return 0 if (fig["check"]["verdict"], bad) == ("ok", "violation") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checker")
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--info-rate", type=float, default=0.01,
                        help="share of operations made indeterminate (timed out)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/checker.json"))
    parser.add_argument("--history", type=Path, default=None,
                        help="time the checker on a recorded chaos run (its --out directory)")
    parser.add_argument("--time-limit-s", type=float, default=600.0,
                        help="with --history: the checker's time budget per check")
    args = parser.parse_args(argv)
    if args.history is not None:
        if not 0 < args.time_limit_s <= 86_400:
            parser.error("--time-limit-s in (0, 86400]")
        return main_recorded(args.history, args.time_limit_s, args.out)
    if not (1 <= args.ops <= 2_000_000 and 1 <= args.clients <= 1024 and args.keys >= 1
            and 0 <= args.info_rate < 1):
        parser.error("--ops 1..2M, --clients 1..1024, --keys >= 1, --info-rate in [0, 1)")
    history, order = simulate(args.ops, args.clients, args.keys, args.seed, args.info_rate)

    t0 = time.process_time()
    accepted = replay(order)
    baseline_s = time.process_time() - t0
    if accepted != len(order):
        print("harness bug: the simulated history does not replay", file=sys.stderr)
        return 1

    t0 = time.process_time()
    good = check_operations(history, CasRegister())
    good_s = time.process_time() - t0

    bad_history = plant_stale_read(history)
    t0 = time.process_time()
    bad = check_operations(bad_history, CasRegister())
    bad_s = time.process_time() - t0

    print(f"history: {args.ops:,} operations, {args.clients} clients, {args.keys} keys, "
          f"{sum(op.indeterminate for op in history)} indeterminate (seed {args.seed})")
    print(f"baseline (one sequential replay): {baseline_s:.3f} s CPU")
    print(f"check, linearizable history:     {good_s:.3f} s CPU  verdict {good.verdict}  "
          f"({good_s / max(baseline_s, 1e-9):,.0f}x baseline)")
    print(f"check, one planted stale read:   {bad_s:.3f} s CPU  verdict {bad.verdict}  "
          f"({bad_s / max(baseline_s, 1e-9):,.0f}x baseline)")
    print(bad.explain())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "bench.checker", "config": {k: str(v) for k, v in vars(args).items()},
        "baseline_cpu_s": baseline_s, "ok_cpu_s": good_s, "ok_verdict": good.verdict,
        "violation_cpu_s": bad_s, "violation_verdict": bad.verdict,
        "window_operations": [len(k.window) for k in bad.violations],
    }, indent=2) + "\n")
    return 0 if (good.verdict, bad.verdict) == ("ok", "violation") else 1


if __name__ == "__main__":
    sys.exit(main())
