"""How fast the linearizability checker decides a large history.

    python -m bench.checker                      # 20,000 operations, 16 clients, 10 keys
    python -m bench.checker --ops 20000 --clients 16 --keys 10 --info-rate 0.01 --seed 7

Histories are simulated (:func:`simulate`): each client runs operations back to back with
random think times and durations; each operation takes effect at a random instant inside its
interval, so the history is linearizable by construction and as concurrent as real clients make
it. One run checks it (verdict ``ok``), then checks a copy with one planted stale read (verdict
``violation``, with the failing window). The baseline, run in the same invocation, is one
sequential replay of the model in linearization order: the floor any checker pays to look at
every operation once. Figures are process CPU seconds (one core), reported with their ratio.
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

from quorumboard.consensus.testing.checker import UNKNOWN, CasRegister, Operation, check_operations


def simulate(ops_total: int, clients: int, keys: int, seed: int,
             info_rate: float = 0.0) -> tuple[list[Operation], list[Operation]]:
    """A linearizable compare-and-set register history; returns it and its linearization."""
    rnd = random.Random(seed)
    clock = [0.0] * clients
    planned = []
    for i in range(ops_total):
        c = i % clients
        call = clock[c] + rnd.expovariate(1 / 0.0005)
        duration = rnd.expovariate(1 / 0.003)
        clock[c] = call + duration
        point = call + rnd.random() * duration
        planned.append((point, i, c, f"k{rnd.randrange(keys)}", call, call + duration))
    planned.sort()
    state: dict[str, tuple[int, Any]] = {}
    order: list[Operation] = []
    for _point, i, c, key, call, ret in planned:
        version, value = state.get(key, (0, None))
        inp: tuple[Any, ...]
        out: Any
        if rnd.random() < 0.5:
            inp, out = ("read",), (version, value)
        else:
            expect = version if rnd.random() < 0.7 else max(0, version - 1)
            new = rnd.randrange(1_000_000)
            inp = ("cas", expect, new)
            if expect == version:
                state[key] = (version + 1, new)
                out = ("ok", version + 1)
            else:
                out = ("conflict", version)
        order.append(Operation(i, f"c{c}", key, inp, out, call, ret))
    history = [dataclasses.replace(op, output=UNKNOWN, ret=math.inf)
               if rnd.random() < info_rate else op for op in order]
    history.sort(key=lambda op: op.id)
    return history, order


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checker")
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--info-rate", type=float, default=0.01,
                        help="share of operations made indeterminate (timed out)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/checker.json"))
    args = parser.parse_args(argv)
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
