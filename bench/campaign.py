"""The long chaos campaign: many seeded runs of ``quorumboard chaos``, every nemesis kind, and a
table of what each found.

    python -m bench.campaign --runs 12 --duration-s 60 --out runs/campaign

Run ``i`` uses seed ``seed + i`` and a nemesis set taken in turn from :data:`NEMESIS_SETS` (all
kinds together, then pairs that interact: a partition while clocks drift, kills during
pauses, ...). Each run's directory holds its full artefacts (see :mod:`consensus.chaos`); the
campaign writes ``campaign.json`` and prints one line per run. Exit 0 only if every run was
checked valid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from consensus.chaos import EXIT_UNKNOWN, EXIT_VIOLATION, Scenario, run_chaos
from consensus.history import FAULT_KINDS, FaultKind
from consensus.logs import configure_logging

NEMESIS_SETS: tuple[tuple[FaultKind, ...], ...] = (
    FAULT_KINDS,
    ("kill", "pause"),
    ("partition", "clock"),
    ("loss", "delay", "kill"),
    ("partition", "pause"),
)
RUNS_MAX = 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replicas", type=int, default=5)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--keys", type=int, default=10)
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=Path("runs", f"campaign-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = p.parse_args(argv)
    if not 1 <= args.runs <= RUNS_MAX:
        p.error(f"--runs must be 1..{RUNS_MAX}")
    configure_logging("warning")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i in range(args.runs):
        kinds = NEMESIS_SETS[i % len(NEMESIS_SETS)]
        scenario = Scenario(replicas=args.replicas, clients=args.clients, rate=args.rate,
                            keys=args.keys, duration_s=args.duration_s, nemesis=list(kinds),
                            seed=args.seed + i)
        started = time.monotonic()
        row: dict[str, Any] = {"run": i, "seed": scenario.seed, "nemesis": list(kinds)}
        try:
            report = run_chaos(scenario, args.out / f"run-{i:03d}-seed-{scenario.seed}")
            row.update(verdict=report.verdict, operations=report.operations,
                       faults=report.faults_injected, problems=report.problems)
        except Exception as exc:  # one broken run is a finding; the campaign goes on
            row.update(verdict="unknown", operations=0, faults=0,
                       problems=[f"the run failed: {type(exc).__name__}: {exc}"])
        row["wall_s"] = round(time.monotonic() - started, 1)
        rows.append(row)
        print(f"run {i:3d} seed {scenario.seed:4d} {','.join(kinds):40} {row['verdict']:8} "
              f"ops {row['operations']:6d} faults {row['faults']:3d} "
              f"{'; '.join(row['problems'])}", flush=True)
        (args.out / "campaign.json").write_text(json.dumps(rows, indent=2) + "\n")
    verdicts = [r["verdict"] for r in rows]
    print(f"{verdicts.count('valid')} valid, {verdicts.count('invalid')} invalid, "
          f"{verdicts.count('unknown')} unknown; wrote {args.out}/campaign.json")
    if "invalid" in verdicts:
        return EXIT_VIOLATION
    return EXIT_UNKNOWN if "unknown" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
