"""Memory and disk bounded in bytes, memory per key, and a lagging replica's catch-up.

``python -m bench.bounds`` (from the repository root) runs three parts on fresh 3-replica
``LocalCluster`` processes and writes one JSON file (``--out``, default
``runs/bench-bounds.json``); the figures are in the README ("Bounded memory and disk").

* **overwrites** - ``--overwrites`` (10,000) puts of a ``--value-bytes`` (1 MiB) value, round
  robin over ``--keys`` (10) keys under ``last-writer-wins``: 10 GiB through the log for 10 MiB
  of live state. Every replica's RSS and data-dir size are sampled throughout (and read at
  checkpoints), and their peaks compared with the bounds the configuration implies (below).
* **keys** - ``--rss-keys`` (100,000) keys of ``--key-value-bytes`` (256 B): every replica's
  RSS before and after, per 100k keys.
* **catch-up** - one follower is SIGKILLed, the others commit ``--behind-entries`` (100,000)
  log entries (the leader compacts its log meanwhile, so the follower needs a snapshot), the
  follower restarts; time from the restart until it serves, and until it has applied
  everything the leader had committed. Target: <= 5 s.

The bounds (``Limits`` and the replica's ``compaction_journal_bytes``, defaults unless given):
L = live bytes (keys + values: ``status().space_bytes``, at most ``space_quota_bytes``),
E = ``events_value_bytes_max``, A = ``audit_value_bytes_max``, J = ``compaction_journal_bytes``,
V = one value, M = 16 MiB of metadata (20,000 events and audit records, sessions).
A snapshot holds S = L + E + A + M at most.

* **data dir** <= 2 S + J + 2 V: the snapshot, the next one while it is written, and the
  journal, which is compacted once it grew J (plus the entry that crossed it and one in flight).
* **RSS** <= idle RSS + L + E + A + J + V + 3 S + T: the state (retained values are shared with
  the live ones when they are the same put, so L + E + A overcounts), the journal held in
  memory, a snapshot being written (the state packed, sealed, and joined: three transient
  copies), and T, the Raft transport's buffers: per peer at most ``send_buffer_bytes_max``
  (64 MiB) queued to send and one frame (``frame_bytes_max``, 16 MiB) being received, plus a
  client's request and reply (2 V).

Nothing here asserts a figure: the JSON carries each measured peak, its bound and whether it
held, and the exit code is 1 if a bound or the catch-up target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import finish, result_header

MIB = 2**20
METADATA_BYTES = 16 * MIB
CATCH_UP_TARGET_S = 5.0
SAMPLE_PERIOD_S = 0.5
PART_TIMEOUT_S = 3600.0
POLL_S = 0.02


@dataclasses.dataclass
class Config:
    overwrites: int
    value_bytes: int
    keys: int
    rss_keys: int
    key_value_bytes: int
    behind_entries: int
    writers: int
    parts: list[str]
    out: Path
    workdir: Path | None = None
    events_value_bytes_max: int | None = None
    audit_value_bytes_max: int | None = None
    compaction_journal_bytes: int | None = None


# ------------------------------------------------------------------------------ measuring


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of ``pid`` in bytes, from /proc (0, 0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def kib(name: str) -> int:
        return int(fields.get(name, "0 kB").split()[0]) * 1024

    return kib("VmRSS"), kib("VmHWM")


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (files vanishing meanwhile count 0)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


class Sampler:
    """Samples every replica's RSS and data-dir size on a thread until stopped; keeps peaks."""

    def __init__(self, pids: Callable[[], list[int | None]], dirs: list[Path]) -> None:
        self._pids = pids
        self._dirs = dirs
        self.rss_peak = [0] * len(dirs)
        self.disk_peak = [0] * len(dirs)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._thread.start()

    def _run(self) -> None:
        for _ in range(int(PART_TIMEOUT_S / SAMPLE_PERIOD_S)):
            if self._stop.is_set():
                return
            for i, pid in enumerate(self._pids()):
                if pid is not None:
                    self.rss_peak[i] = max(self.rss_peak[i], rss_bytes(pid)[0])
                self.disk_peak[i] = max(self.disk_peak[i], dir_bytes(self._dirs[i]))
            self.samples += 1
            self._stop.wait(SAMPLE_PERIOD_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def bounds(live: int, events: int, audit: int, journal: int, value: int, *,
           peers: int) -> tuple[int, int, int]:
    """(snapshot, data dir, RSS over idle) bounds in bytes: see the module docstring."""
    from quorumboard.consensus.raft.node import RaftSettings

    fields = RaftSettings.model_fields
    send_max, frame_max = fields["send_buffer_bytes_max"].default, \
        fields["frame_bytes_max"].default
    snapshot = live + events + audit + METADATA_BYTES
    disk = 2 * snapshot + journal + 2 * value
    transport = peers * (send_max + frame_max) + 2 * value
    rss = live + events + audit + journal + value + 3 * snapshot + transport
    return snapshot, disk, rss


def _limits(cfg: Config, **extra: int) -> Any:
    from quorumboard.consensus import Limits

    given = {name: getattr(cfg, name) for name in ("events_value_bytes_max",
                                                   "audit_value_bytes_max")
             if getattr(cfg, name) is not None}
    return Limits(**given, **extra)


def _cluster(cfg: Config, workdir: Path, name: str, **kwargs: Any) -> Any:
    from quorumboard.consensus import LocalCluster

    if cfg.compaction_journal_bytes is not None:
        kwargs["compaction_journal_bytes"] = cfg.compaction_journal_bytes
    return LocalCluster(replicas=3, data_dir=workdir / name, **kwargs)


def _pids(cluster: Any) -> list[int | None]:
    return [cluster.pid(i) for i in range(cluster.size)]


# ------------------------------------------------------------------------------- the parts


def part_overwrites(cfg: Config, workdir: Path) -> dict[str, Any]:
    """``cfg.overwrites`` puts of one large value over ``cfg.keys`` keys; peaks vs bounds."""
    from quorumboard.consensus.raft.node import COMPACTION_JOURNAL_BYTES_DEFAULT

    limits = _limits(cfg)
    with _cluster(cfg, workdir, "overwrites", limits=limits) as c:
        board = c.board(agent="writer", timeout_s=60.0)
        board.set_policy("big/", "last-writer-wins")
        dirs = [c.data_dir / f"r{i}" for i in range(c.size)]
        idle = [rss_bytes(pid)[0] if pid else 0 for pid in _pids(c)]
        sampler = Sampler(lambda: _pids(c), dirs)
        checkpoints: list[dict[str, Any]] = []
        marks = sorted({m for m in (300, 1_000, 3_000, cfg.overwrites) if m <= cfg.overwrites})
        value = "v" * (cfg.value_bytes - 5)  # msgpack: a str32 header of 5 bytes
        t0 = time.monotonic()
        try:
            for n in range(1, cfg.overwrites + 1):
                board.put(f"big/{n % cfg.keys}", value)
                if n in marks:
                    checkpoints.append({
                        "overwrites": n, "elapsed_s": round(time.monotonic() - t0, 1),
                        "rss_mib": [round(rss_bytes(p)[0] / MIB, 1) if p else None
                                    for p in _pids(c)],
                        "data_dir_mib": [round(dir_bytes(d) / MIB, 1) for d in dirs]})
                    print(f"  {checkpoints[-1]}", flush=True)
        finally:
            sampler.stop()
        elapsed = time.monotonic() - t0
        _wait_applied(c)
        status = board.status()
        hwm = [rss_bytes(p)[1] if p else 0 for p in _pids(c)]
        journal = cfg.compaction_journal_bytes or COMPACTION_JOURNAL_BYTES_DEFAULT
    live = status.space_bytes
    snapshot_max, disk_bound, rss_over_idle = bounds(
        live, limits.events_value_bytes_max, limits.audit_value_bytes_max, journal,
        cfg.value_bytes, peers=2)
    rss_bound = [i + rss_over_idle for i in idle]
    rss_peak = [max(a, b) for a, b in zip(sampler.rss_peak, hwm, strict=True)]
    return {
        "overwrites": cfg.overwrites, "value_bytes": cfg.value_bytes, "keys": cfg.keys,
        "elapsed_s": round(elapsed, 1), "puts_per_s": round(cfg.overwrites / elapsed, 1),
        "limits": {"events_value_bytes_max": limits.events_value_bytes_max,
                   "audit_value_bytes_max": limits.audit_value_bytes_max,
                   "space_quota_bytes": limits.space_quota_bytes,
                   "compaction_journal_bytes": journal},
        "live_bytes": live, "snapshot_bound_bytes": snapshot_max,
        "idle_rss_mib": [round(x / MIB, 1) for x in idle],
        "rss_peak_mib": [round(x / MIB, 1) for x in rss_peak],
        "rss_bound_mib": [round(x / MIB, 1) for x in rss_bound],
        "data_dir_peak_mib": [round(x / MIB, 1) for x in sampler.disk_peak],
        "data_dir_bound_mib": round(disk_bound / MIB, 1),
        "samples": sampler.samples, "checkpoints": checkpoints,
        "rss_within_bound": all(p <= b for p, b in zip(rss_peak, rss_bound, strict=True)),
        "data_dir_within_bound": all(p <= disk_bound for p in sampler.disk_peak),
    }


def _write_parallel(cfg: Config, c: Any, count: int, put: Callable[[Any, int], None],
                    until: Callable[[], bool] | None = None) -> int:
    """``count`` puts split over ``cfg.writers`` threads, each with its own Board (concurrent
    proposals share log entries through group commit). With ``until``, the writers go on past
    their shares until it holds (checked every ``SAMPLE_PERIOD_S`` by one thread, not per put:
    it may ask every replica). Returns the puts made."""
    boards = [c.board(agent=f"w{i}", timeout_s=60.0) for i in range(cfg.writers)]
    made = [0] * cfg.writers
    errors: list[BaseException] = []
    done = threading.Event()

    def run(w: int) -> None:
        try:
            for n in range(w, 100 * count + cfg.writers, cfg.writers):
                if n >= count and (until is None or done.is_set()):
                    return
                put(boards[w], n)
                made[w] += 1
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(cfg.writers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + PART_TIMEOUT_S
    while until is not None and not done.is_set() and time.monotonic() < deadline \
            and any(t.is_alive() for t in threads):
        if until():
            done.set()
        else:
            time.sleep(SAMPLE_PERIOD_S)
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    return sum(made)


def part_keys(cfg: Config, workdir: Path) -> dict[str, Any]:
    """RSS of every replica before and after ``cfg.rss_keys`` keys of ``key_value_bytes``."""
    value = "k" * (cfg.key_value_bytes - 3)  # msgpack: a str16 header of 3 bytes
    with _cluster(cfg, workdir, "keys", limits=_limits(cfg)) as c:
        c.board(agent="warm").put("warm/x", 1)
        before = [rss_bytes(p)[0] if p else 0 for p in _pids(c)]
        t0 = time.monotonic()
        made = _write_parallel(cfg, c, cfg.rss_keys,
                               lambda b, n: b.put(f"keys/{n:08d}", value))
        elapsed = time.monotonic() - t0
        _wait_applied(c)
        after = [rss_bytes(p)[0] if p else 0 for p in _pids(c)]
        status = c.board(agent="reader").status()
    per_100k = [(a - b) * 100_000 / max(1, made) for a, b in zip(after, before, strict=True)]
    return {"keys": made, "value_bytes": cfg.key_value_bytes, "elapsed_s": round(elapsed, 1),
            "live_bytes": status.space_bytes,
            "rss_before_mib": [round(x / MIB, 1) for x in before],
            "rss_after_mib": [round(x / MIB, 1) for x in after],
            "rss_per_100k_keys_mib": [round(x / MIB, 1) for x in per_100k]}


def part_catch_up(cfg: Config, workdir: Path) -> dict[str, Any]:
    """A follower killed, ``behind_entries`` log entries committed without it, restarted:
    seconds until it serves and until it applied what the leader had committed."""
    from quorumboard.consensus import Unavailable

    with _cluster(cfg, workdir, "catchup", limits=_limits(cfg)) as c:
        leader = c.wait_for_leader()
        lagger = (leader + 1) % c.size
        c.board(agent="warm").put("warm/x", 1)
        c.kill(lagger)
        start_index = _commit_index(c)
        t0 = time.monotonic()
        puts = _write_parallel(
            cfg, c, cfg.behind_entries, lambda b, n: b.put(f"lag/{n % 1000:04d}/{n}", n),
            until=lambda: _commit_index(c) - start_index >= cfg.behind_entries)
        write_s = time.monotonic() - t0
        target = _commit_index(c)
        behind = target - start_index
        t1, restarted_at = time.monotonic(), time.time()
        c.restart(lagger)
        serving_s = time.monotonic() - t1
        caught_up_s: float | None = None
        deadline = t1 + 120.0
        while time.monotonic() < deadline:
            st = c.status()[lagger]
            if st is not None and st.last_applied >= target:
                caught_up_s = time.monotonic() - t1
                break
            time.sleep(POLL_S)
        print(f"  caught up after {caught_up_s} s", flush=True)
        phases = _log_phases(c.data_dir / f"r{lagger}" / "replica.log", restarted_at)
        try:  # every replica digests its whole state on its loop: slow under load
            converged: str | None = c.wait_converged(120)[:16]
        except Unavailable as exc:
            converged = f"not confirmed: {exc}"[:200]
    return {"entries_behind": behind, "puts_behind": puts, "write_s": round(write_s, 1),
            "restart_until_serving_s": round(serving_s, 2),
            "restart_until_caught_up_s": None if caught_up_s is None else round(caught_up_s, 2),
            "phases_s": phases, "snapshot_installed": "snapshot_loaded_s" in phases,
            "converged_digest": converged,
            "target_s": CATCH_UP_TARGET_S,
            "within_target": caught_up_s is not None and caught_up_s <= CATCH_UP_TARGET_S}


def _log_phases(log: Path, since: float) -> dict[str, float]:
    """Seconds from ``since`` (wall clock) to the restarted replica's Raft start and snapshot
    install, read from its log: where its catch-up time went."""
    phases: dict[str, float] = {}
    names = {"raft_started": "raft_started_s", "raft_snapshot_loaded": "snapshot_loaded_s"}
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        try:
            record = json.loads(line)
            at = datetime.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            continue
        name = names.get(record.get("event", ""))
        if name and at.timestamp() >= since:
            phases.setdefault(name, round(at.timestamp() - since, 2))
    return phases


def _wait_applied(c: Any, timeout_s: float = 300.0) -> None:
    """Until every replica applied what was committed when called (their status, without the
    digest: a digest of a large state is computed on the replica's loop, slow under load)."""
    target = _commit_index(c)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = c.status()
        if all(st is not None and st.last_applied >= target for st in statuses):
            return
        time.sleep(SAMPLE_PERIOD_S)
    raise RuntimeError(f"replicas did not apply up to {target} within {timeout_s} s")


def _commit_index(c: Any) -> int:
    """The highest commit index any replica reports (a replica busy past its status deadline
    answers None and is skipped; at least one of a majority answers within a few tries)."""
    for _ in range(50):
        known: list[int] = [st.commit_index for st in c.status() if st is not None]
        if known:
            return max(known)
        time.sleep(SAMPLE_PERIOD_S)
    raise RuntimeError("no replica answered status in 50 tries")


# ------------------------------------------------------------------------------------ main

PARTS: dict[str, Callable[[Config, Path], dict[str, Any]]] = {
    "overwrites": part_overwrites, "keys": part_keys, "catch-up": part_catch_up}


def parse_args(argv: list[str] | None) -> Config:
    ap = argparse.ArgumentParser(prog="python -m bench.bounds", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overwrites", type=int, default=10_000)
    ap.add_argument("--value-bytes", type=int, default=MIB)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--rss-keys", type=int, default=100_000)
    ap.add_argument("--key-value-bytes", type=int, default=256)
    ap.add_argument("--behind-entries", type=int, default=100_000)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--events-value-bytes-max", type=int, default=None)
    ap.add_argument("--audit-value-bytes-max", type=int, default=None)
    ap.add_argument("--compaction-journal-bytes", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-bounds.json"))
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the clusters' data dirs (and replica logs) here")
    a = ap.parse_args(argv)
    parts = [p for p in a.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    if a.value_bytes < 16 or a.key_value_bytes < 16 or min(a.keys, a.writers) < 1:
        ap.error("--value-bytes and --key-value-bytes >= 16, --keys and --writers >= 1")
    return Config(overwrites=a.overwrites, value_bytes=a.value_bytes, keys=a.keys,
                  rss_keys=a.rss_keys, key_value_bytes=a.key_value_bytes,
                  behind_entries=a.behind_entries, writers=a.writers, parts=parts, out=a.out,
                  workdir=a.workdir,
                  events_value_bytes_max=a.events_value_bytes_max,
                  audit_value_bytes_max=a.audit_value_bytes_max,
                  compaction_journal_bytes=a.compaction_journal_bytes)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = result_header("bench.bounds", dataclasses.replace(cfg, workdir=None))
    failed = False
    with tempfile.TemporaryDirectory(prefix="qb-bounds-") as tmp:
        for name in cfg.parts:
            print(f"{name} ...", flush=True)
            figures = PARTS[name](cfg, cfg.workdir or Path(tmp))
            print(f"  {figures}", flush=True)
            result[name] = figures
            failed = failed or figures.get("rss_within_bound") is False \
                or figures.get("data_dir_within_bound") is False \
                or figures.get("within_target") is False
    return finish(cfg.out, result, failed)


if __name__ == "__main__":
    raise SystemExit(main())
