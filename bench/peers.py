"""quorumboard against etcd, in one invocation: the comparison anyone can rerun.

``python -m bench.peers`` (from the repository root) measures, for every client count in
``--clients`` (default 1, 8 and 64) and every op in ``--ops``:

* **quorumboard** - a fresh ``LocalCluster(replicas=3, fsync=...)`` per row, once with
  ``fsync=False`` and once with ``fsync=True`` (``--fsync on,off``);
* **etcd** - a fresh 3-member etcd cluster per row (three ``etcd`` processes on loopback, their
  own data dirs in a temp dir). etcd always fsyncs its write-ahead log (it has no switch for it
  in 3.4), so its row is paired with both quorumboard rows of the same op and client count;
* **etcd-grpc** - the same, its clients on etcd's gRPC API through ``aetcd`` (the ``bench``
  extra; skipped with a message when it is not installed, or with ``--no-grpc``).

Workload (closed loop): ``--clients`` threads in this one process, each with its own client (a
``Board``; for etcd a keep-alive ``http.client`` connection), doing one operation after another
on 100 keys holding 256-byte values:

* ``put`` - overwrite a key (quorumboard's keys are under the ``last-writer-wins`` policy here,
  so a put is the blind overwrite an etcd put is; the default policy refuses blind overwrites);
* ``cas`` - compare-and-set: write only if the key's version is the one this client last saw
  (quorumboard ``put(expect_version=...)``; etcd a ``txn`` comparing the key's ``version``);
  each client owns the keys ``k = i mod clients``, so a compare is expected to succeed and a
  failed one is counted as an error;
* ``get`` - linearizable read (etcd's default range; quorumboard's default ``get``);
* ``stale`` - a read served from one member's state (etcd ``serializable``; quorumboard
  ``get(stale=True)``).

All clients talk to the leader (quorumboard's Boards are given the leader's endpoint first, and
writes follow the leader; the etcd clients are pointed at the member that leads when the row
starts), so neither system pays a follower's forwarding hop.
The ``etcd`` rows go through its v3 JSON gateway (HTTP/1.1 + JSON + base64 on the client port),
which is slower than its gRPC path: etcd as a Python program without a gRPC client sees it.
The ``etcd-grpc`` rows are the faster path, as a Python gRPC client gets it.

Rows are interleaved (for each repeat, client count and op: quorumboard with the first
``--fsync`` setting, etcd, etcd-grpc, quorumboard with the other) so slow drift of the shared machine hits both systems alike, and every
ratio (quorumboard / etcd ops/s) divides runs close in time. Window, latency and CPU
columns are computed by :mod:`bench.throughput`'s code. Prints a table and the ratios, writes the
same as JSON to ``--out``. The exit status is 0 unless a run failed; no target is asserted.
etcd comes from Debian (``apt-get install etcd-server``, done here when run as root and the
package is available); without it the etcd rows are skipped with a message saying why.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import ctypes.util
import dataclasses
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from bench.common import (
    PUTS_PER_AGENT_MAX_DEFAULT,
    AgentStats,
    Window,
    finish,
    result_header,
    run_agents,
)
from bench.throughput import (
    HOST,
    CpuSample,
    HarnessError,
    Row,
    _on_sigterm,
    _spread,
    fill_row,
    sample_window,
)

QB = "quorumboard"
ETCD = "etcd"
ETCD_GRPC = "etcd-grpc"
OPS = ("put", "cas", "get", "stale")
KEYS = 100
VALUE_BYTES = 256
KEY_PREFIX = "peers/"
MEMBERS = 3

ETCD_START_TIMEOUT_S = 30.0
# A member whose peers went first tries to hand over leadership and exits only at SIGKILL
# (5 s later, measured): its data is thrown away, so it gets one second.
ETCD_STOP_TIMEOUT_S = 1.0
HTTP_TIMEOUT_S = 10.0
APT_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.05


class EtcdUnavailable(Exception):
    """etcd cannot be measured here (not installed and not installable): the reason."""


@dataclasses.dataclass
class Config:
    clients: list[int]
    ops: list[str]
    fsync: list[bool]
    duration_s: float
    warmup_s: float
    repeats: int
    etcd: bool
    install: bool
    grpc: bool
    ops_max: int
    out: Path
    poll_spin_us: int | None = None


@dataclasses.dataclass
class PeerRow(Row):
    """A :class:`Row` of this benchmark: ``agents`` is the client count, ``puts_per_s`` and
    ``committed`` count operations of any kind (``ops_per_s``/``completed`` in the JSON)."""

    op: str = ""
    fsync: bool = False

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["clients"] = out.pop("agents")
        out["ops_per_s"] = out.pop("puts_per_s")
        out["completed"] = out.pop("committed")
        return out


def _key(i: int) -> str:
    return f"{KEY_PREFIX}k{i:03d}"


def keys_of(client: int, clients: int) -> list[str]:
    """The keys client ``client`` of ``clients`` works on: those ``k = client mod clients``.

    Disjoint across clients, so a compare-and-set fails only if something is wrong; every
    client still touches several keys while ``clients`` < 100.
    """
    return [_key(k) for k in range(KEYS) if k % clients == client]


# ------------------------------------------------------------------------------ quorumboard


def run_quorumboard(cfg: Config, clients: int, op: str, fsync: bool, workdir: Path) -> PeerRow:
    from quorumboard.consensus import LocalCluster, StaleVersion, connect

    row = PeerRow(system=QB, agents=clients, processes=MEMBERS, op=op, fsync=fsync)
    value = "v" * VALUE_BYTES
    with LocalCluster(replicas=MEMBERS, data_dir=workdir / "cluster", fsync=fsync,
                      log_level="warning", poll_spin_us=cfg.poll_spin_us) as cluster:
        leader = cluster.wait_for_leader()
        # The leader's endpoint first: a Board reads from the replica it reached first (a
        # follower serves linearizable reads too), so without this a row that only reads would
        # measure whichever replica happens to be listed first, unlike the etcd rows.
        endpoints = ",".join([cluster.endpoints[leader]]
                             + [e for i, e in enumerate(cluster.endpoints) if i != leader])
        with connect(endpoints, agent="peers-load") as loader:
            loader.set_policy(KEY_PREFIX, "last-writer-wins")
            versions = {_key(k): loader.put(_key(k), value).version for k in range(KEYS)}
        boards = [connect(endpoints, agent=f"peers-c{i}") for i in range(clients)]
        try:
            def make(i: int) -> Callable[[int], None]:
                board, mine = boards[i], keys_of(i, clients)
                seen = {k: versions[k] for k in mine}

                def put(n: int) -> None:
                    board.put(mine[n % len(mine)], value)

                def cas(n: int) -> None:
                    key = mine[n % len(mine)]
                    try:
                        seen[key] = board.put(key, value, expect_version=seen[key]).version
                    except StaleVersion as exc:
                        seen[key] = exc.current.version if exc.current is not None else 0
                        raise

                def get(n: int) -> None:
                    if board.get(mine[n % len(mine)]) is None:
                        raise LookupError(f"{mine[n % len(mine)]} vanished")

                def stale(n: int) -> None:
                    if board.get(mine[n % len(mine)], stale=True) is None:
                        raise LookupError(f"{mine[n % len(mine)]} vanished")

                return {"put": put, "cas": cas, "get": get, "stale": stale}[op]

            pids = {f"replica-{i}": pid for i in range(MEMBERS)
                    if (pid := cluster.pid(i)) is not None}
            _measure(row, cfg, [make(i) for i in range(clients)], pids, f"replica-{leader}")
        finally:
            for b in boards:
                b.close()
    return row


# ------------------------------------------------------------------------------------- etcd


def ensure_etcd(install: bool = True) -> str:
    """The ``etcd`` binary's path, installing Debian's ``etcd-server`` first if it is missing
    and this process may (root, apt-get present, a candidate version known to apt).

    Raises :class:`EtcdUnavailable` with the reason otherwise.
    """
    found = shutil.which("etcd")
    if found:
        return found
    if not install:
        raise EtcdUnavailable("etcd is not installed (and --no-install): "
                              "install it with `apt-get install etcd-server`")
    if os.geteuid() != 0:
        raise EtcdUnavailable("etcd is not installed and this is not root: "
                              "install it with `apt-get install etcd-server` (or put `etcd` "
                              "on PATH), or pass --no-etcd")
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        raise EtcdUnavailable("etcd is not installed and there is no apt-get to install it")
    try:
        policy = subprocess.run(["apt-cache", "policy", "etcd-server"], capture_output=True,
                                text=True, timeout=APT_TIMEOUT_S, check=False).stdout
        if "Candidate:" not in policy or "Candidate: (none)" in policy:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True,
                           timeout=APT_TIMEOUT_S, check=False)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "etcd-server", "etcd-client"],
                              capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EtcdUnavailable(f"installing etcd-server failed: {exc}") from None
    found = shutil.which("etcd")
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EtcdUnavailable(f"`apt-get install etcd-server` failed ({done.returncode}): "
                              f"{tail[0]}")
    return found


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when this process dies.

    etcd cannot watch a lifeline as quorumboard's replicas do, so the kernel's parent-death
    signal is what keeps a killed benchmark from leaving etcd members behind. libc is resolved
    here, in the parent: the function itself must do nothing but the system call after fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)

    def set_signal() -> None:
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG

    return set_signal


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdClient:
    """One keep-alive HTTP/1.1 connection to a member's v3 JSON gateway (one per thread).

    The gateway is what a Python program can use without a gRPC client: JSON bodies, keys and
    values base64-encoded, int64 fields as strings.
    """

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT_S)
        self._b64: dict[bytes, str] = {}  # the benchmark writes one value: encode it once

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.conn.request("POST", path, json.dumps(body).encode(),
                          {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise HarnessError(f"etcd {path}: HTTP {resp.status}: {data[:300]!r}")
        out = json.loads(data)
        if not isinstance(out, dict):
            raise HarnessError(f"etcd {path}: not a JSON object: {data[:300]!r}")
        return out

    def _value(self, value: bytes) -> str:
        if value not in self._b64:
            self._b64 = {value: base64.b64encode(value).decode()}
        return self._b64[value]

    def put(self, key: str, value: bytes) -> None:
        self.call("/v3/kv/put", {"key": _b64(key), "value": self._value(value)})

    def get(self, key: str, serializable: bool = False) -> bool:
        """Whether the key exists (read linearizably unless ``serializable``)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if serializable:
            body["serializable"] = True
        return bool(self.call("/v3/kv/range", body).get("kvs"))

    def cas(self, key: str, value: bytes, version: int) -> tuple[bool, int]:
        """Put if the key's version is ``version``: (succeeded, the key's version now)."""
        k = _b64(key)
        out = self.call("/v3/kv/txn", {
            "compare": [{"key": k, "target": "VERSION", "result": "EQUAL",
                         "version": str(version)}],
            "success": [{"request_put": {"key": k, "value": self._value(value)}}],
            "failure": [{"request_range": {"key": k}}]})
        if out.get("succeeded"):
            return True, version + 1
        responses = out.get("responses") or [{}]
        kvs = (responses[0].get("response_range") or {}).get("kvs") or []
        return False, int(kvs[0].get("version", 0)) if kvs else 0

    def versions(self, prefix: str, limit: int) -> dict[str, int]:
        """Every key under ``prefix`` (at most ``limit``) with its version."""
        end = _b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))
        kvs = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": end,
                                         "limit": str(limit)}).get("kvs") or []
        return {base64.b64decode(kv["key"]).decode(): int(kv.get("version", 0)) for kv in kvs}

    def close(self) -> None:
        self.conn.close()


class EtcdGrpcClient:
    """The same operations through etcd's gRPC API with ``aetcd`` (the ``bench`` extra).

    aetcd is asyncio-only; each client thread gets its own event loop and channel and runs one
    call at a time on it, so the workload stays one closed-loop client per thread.
    """

    def __init__(self, port: int) -> None:
        import asyncio

        import aetcd

        self._loop = asyncio.new_event_loop()
        self._client = aetcd.Client(host=HOST, port=port, timeout=int(HTTP_TIMEOUT_S))
        self._tx = self._client.transactions
        self._run(self._client.connect())

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def put(self, key: str, value: bytes) -> None:
        self._run(self._client.put(key.encode(), value))

    def get(self, key: str, serializable: bool = False) -> bool:
        return self._run(self._client.get(key.encode(), serializable=serializable)) is not None

    def cas(self, key: str, value: bytes, version: int) -> tuple[bool, int]:
        k, tx = key.encode(), self._tx
        ok, responses = self._run(self._client.transaction(
            compare=[tx.version(k) == version], success=[tx.put(k, value)],
            failure=[tx.get(k)]))
        if ok:
            return True, version + 1
        kvs = responses[0] if responses else []
        return False, int(kvs[0][1].version) if kvs else 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._client.close())
        self._loop.close()


def grpc_client_missing() -> str:
    """Why the gRPC rows cannot run here ("" if they can)."""
    try:
        import aetcd  # noqa: F401
    except ImportError as exc:
        return (f"no gRPC client ({exc}): `pip install -e '.[bench]'` installs aetcd, "
                "an asyncio gRPC client for etcd")
    return ""


class EtcdCluster:
    """Three etcd members on loopback, each its own process group and data dir; stopped (group
    SIGTERM, then SIGKILL) by :meth:`stop` whatever happened."""

    def __init__(self, binary: str, workdir: Path) -> None:
        from quorumboard.consensus.cluster import _free_ports

        self.workdir = workdir
        ports = _free_ports(2 * MEMBERS, HOST)
        self.client_ports, peer_ports = ports[:MEMBERS], ports[MEMBERS:]
        names = [f"m{i}" for i in range(MEMBERS)]
        initial = ",".join(f"{n}=http://{HOST}:{p}" for n, p in zip(names, peer_ports,
                                                                       strict=True))
        token = f"qb-peers-{uuid.uuid4().hex[:12]}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        preexec = _parent_death_signal()
        try:
            for name, cport, pport in zip(names, self.client_ports, peer_ports, strict=True):
                log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
                self._logs.append(log)
                self.procs.append(subprocess.Popen(
                    [binary, "--name", name, "--data-dir", str(workdir / name),
                     "--listen-client-urls", f"http://{HOST}:{cport}",
                     "--advertise-client-urls", f"http://{HOST}:{cport}",
                     "--listen-peer-urls", f"http://{HOST}:{pport}",
                     "--initial-advertise-peer-urls", f"http://{HOST}:{pport}",
                     "--initial-cluster", initial, "--initial-cluster-token", token,
                     "--initial-cluster-state", "new", "--logger", "zap",
                     "--log-level", "warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=preexec))
            self.leader = self._wait_for_leader(time.monotonic() + ETCD_START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> dict[str, int]:
        return {f"etcd-{i}": p.pid for i, p in enumerate(self.procs)}

    def _wait_for_leader(self, deadline: float) -> int:
        """Poll every member's status until all answer and agree on a leader: its index."""
        last = "no answer yet"
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise HarnessError(f"etcd member {i} exited ({p.returncode}) at start"
                                       f"{self._tail(i)}")
            try:
                ids, leaders = [], set()
                for port in self.client_ports:
                    c = EtcdClient(port)
                    try:
                        st = c.call("/v3/maintenance/status", {})
                    finally:
                        c.close()
                    ids.append(str(st["header"]["member_id"]))
                    leaders.add(str(st.get("leader", "0")))
                if len(leaders) == 1 and (lead := leaders.pop()) in ids:
                    return ids.index(lead)
                last = f"members {ids} see leaders {sorted(leaders)}"
            except (OSError, HarnessError, KeyError, ValueError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(POLL_INTERVAL_S)
        raise HarnessError(f"etcd: no agreed leader within {ETCD_START_TIMEOUT_S:.0f}s ({last})"
                           f"{self._tail(0)}")

    def _tail(self, i: int) -> str:
        with contextlib.suppress(OSError):
            lines = (self.workdir / f"m{i}.log").read_text(errors="replace").splitlines()
            if lines:
                return "\n    " + "\n    ".join(lines[-10:])
        return ""

    def stop(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, ETCD_STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
            for p in self.procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(p.pid, sig)
            for p in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(wait_s)
        for log in self._logs:
            log.close()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def run_etcd(cfg: Config, binary: str, clients: int, op: str, workdir: Path,
             api: str = ETCD) -> PeerRow:
    """One row against a fresh etcd cluster, through the JSON gateway (``api`` = ``etcd``) or
    gRPC (``etcd-grpc``). Preloading goes through the gateway either way (not measured)."""
    row = PeerRow(system=api, agents=clients, processes=MEMBERS, op=op, fsync=True)
    value = b"v" * VALUE_BYTES
    client_class = EtcdGrpcClient if api == ETCD_GRPC else EtcdClient
    with EtcdCluster(binary, workdir) as cluster:
        port = cluster.client_ports[cluster.leader]
        loader = EtcdClient(port)
        try:
            for k in range(KEYS):
                loader.put(_key(k), value)
            versions = loader.versions(KEY_PREFIX, KEYS)
        finally:
            loader.close()
        if len(versions) != KEYS:
            raise HarnessError(f"etcd: preloaded {KEYS} keys, read back {len(versions)}")
        conns: list[EtcdClient | EtcdGrpcClient] = []
        try:
            for _ in range(clients):
                conns.append(client_class(port))

            def make(i: int) -> Callable[[int], None]:
                c, mine = conns[i], keys_of(i, clients)
                seen = {k: versions[k] for k in mine}

                def put(n: int) -> None:
                    c.put(mine[n % len(mine)], value)

                def cas(n: int) -> None:
                    key = mine[n % len(mine)]
                    ok, seen[key] = c.cas(key, value, seen[key])
                    if not ok:
                        raise HarnessError(f"etcd compare-and-set of {key} failed")

                def get(n: int, serializable: bool = False) -> None:
                    if not c.get(mine[n % len(mine)], serializable):
                        raise LookupError(f"{mine[n % len(mine)]} vanished")

                def stale(n: int) -> None:
                    get(n, serializable=True)

                return {"put": put, "cas": cas, "get": get, "stale": stale}[op]

            row.leader_start = f"m{cluster.leader}"
            _measure(row, cfg, [make(i) for i in range(clients)], cluster.pids(),
                     f"etcd-{cluster.leader}")
        finally:
            for c in conns:
                c.close()
    return row


# ------------------------------------------------------------------------------ measurement


def _measure(row: PeerRow, cfg: Config, ops: list[Callable[[int], None]],
             server_pids: dict[str, int], leader_role: str) -> None:
    """Run the client threads here over one window while sampling CPU, then fill ``row``.

    The clients' CPU is this whole process's (role ``clients``): nothing else runs in it then.
    """
    start = time.monotonic() + cfg.warmup_s + 0.05
    window = Window(start, start + cfg.duration_s)
    pids = {**server_pids, "clients": os.getpid()}
    sampled: list[CpuSample] = []
    sampler = threading.Thread(target=lambda: sampled.append(sample_window(pids, window)),
                               daemon=True, name="cpu-sampler")
    sampler.start()
    stats: list[AgentStats] = run_agents([(f"c{i}", fn) for i, fn in enumerate(ops)], window,
                                         cfg.ops_max)
    sampler.join(max(0.0, window.end + 5.0 - time.monotonic()))
    fill_row(row, stats, window, sampled[0] if sampled else CpuSample({}, None), leader_role)


# -------------------------------------------------------------------------------- reporting


def _ok(rows: list[PeerRow], system: str, clients: int, op: str,
        fsync: bool | None = None) -> list[PeerRow]:
    return [r for r in rows if r.system == system and r.agents == clients and r.op == op
            and not r.failed and (fsync is None or r.fsync == fsync)]


def paired_ratios(rows: list[PeerRow], clients: int, op: str, fsync: bool,
                  base: str = ETCD) -> list[float]:
    """quorumboard (``fsync``) / ``base`` ops/s, each quorumboard run divided by the ``base``
    run of the same repeat, client count and op (they ran next to each other)."""
    out: list[float] = []
    for qb in _ok(rows, QB, clients, op, fsync):
        etcd = next((r for r in _ok(rows, base, clients, op) if r.repeat == qb.repeat), None)
        if etcd is not None and etcd.puts_per_s > 0:
            out.append(qb.puts_per_s / etcd.puts_per_s)
    return out


def _label(r: PeerRow) -> str:
    return f"{r.system}{(' fsync' if r.fsync else ' nofsync') if r.system == QB else ''}"


def report(cfg: Config, rows: list[PeerRow], etcd_skipped: str,
           grpc_skipped: str) -> dict[str, Any]:
    """Print the table and ratio lines; return the same as a JSON-able dict."""
    header = (f"{'system':<19} | {'op':<5} | {'clients':>7} | {'rep':>3} | {'ops/s':>9} | "
              f"{'p50 ms':>7} | {'p99 ms':>7} | {'ldr cpu%':>8} | {'all cpu%':>8} | "
              f"{'ext cpu%':>8} | {'errors':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.failed:
            print(f"{_label(r):<19} | {r.op:<5} | {r.agents:>7} | {r.repeat:>3} | FAILED: "
                  f"{r.failed.splitlines()[0]}")
            continue
        print(f"{_label(r):<19} | {r.op:<5} | {r.agents:>7} | {r.repeat:>3} | "
              f"{r.puts_per_s:>9.1f} | {r.p50_ms:>7.2f} | {r.p99_ms:>7.2f} | "
              f"{r.leader_cpu_pct:>8.0f} | {r.total_cpu_pct:>8.0f} | {r.other_cpu_pct:>8.0f} | "
              f"{r.errors:>6}")
    print("(cpu% = % of one core over the window; ldr = leader, all = the 3 members and the "
          "client process, ext = everything else on the machine)")
    if etcd_skipped:
        print(f"\netcd rows skipped: {etcd_skipped}")
    elif grpc_skipped:
        print(f"\netcd gRPC rows skipped: {grpc_skipped}")
    print("\netcd always fsyncs its WAL. Its `etcd` rows go through its v3 JSON gateway, which "
          "is slower than its gRPC path (the `etcd-grpc` rows, client aetcd).")
    ratios: list[dict[str, Any]] = []
    for base in (ETCD, ETCD_GRPC):
        for clients in cfg.clients:
            for op in cfg.ops:
                for fsync in cfg.fsync:
                    values = paired_ratios(rows, clients, op, fsync, base)
                    if not values:
                        continue
                    ratios.append({"baseline": base, "clients": clients, "op": op,
                                   "fsync": fsync, "paired": [round(v, 4) for v in values],
                                   "ratio": round(statistics.median(values), 4)})
                    print(f"quorumboard (fsync {'on' if fsync else 'off':<3}) / {base:<9} "
                          f"{op:<5} ops/s at {clients:>2} client{'s' if clients != 1 else ' '}"
                          f": {_spread(values, '.2f')}x")
    return {
        **result_header("bench.peers", cfg),
        "workload": {"keys": KEYS, "value_bytes": VALUE_BYTES, "members": MEMBERS,
                     "etcd_api": {ETCD: "v3 JSON gateway over HTTP/1.1 keep-alive",
                                  ETCD_GRPC: "gRPC (aetcd, one event loop per client thread)"},
                     "etcd_fsync": "always (write-ahead log)"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "etcd": _etcd_version()},
        "etcd_skipped": etcd_skipped,
        "grpc_skipped": etcd_skipped or grpc_skipped,
        "rows": [r.to_json() for r in rows],
        "ratios": ratios,
    }


def _etcd_version() -> str:
    binary = shutil.which("etcd")
    if binary is None:
        return ""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
        return out.splitlines()[0] if out else ""
    return ""


# ------------------------------------------------------------------------------------- main


def _csv(text: str, flag: str, parser: argparse.ArgumentParser) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        parser.error(f"{flag}: a comma-separated list")
    return items


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="quorumboard vs etcd: put, compare-and-set, linearizable and stale get")
    parser.add_argument("--clients", default="1,8,64",
                        help=f"comma-separated client thread counts, each 1..{KEYS} "
                             "(default 1,8,64)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"subset of {','.join(OPS)}")
    parser.add_argument("--fsync", default="on,off",
                        help="quorumboard fsync settings: on, off or on,off (etcd always fsyncs)")
    parser.add_argument("--duration-s", type=float, default=5.0, help="measured window per row")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="excluded warm-up per row")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats (default 1)")
    parser.add_argument("--no-etcd", action="store_true", help="quorumboard rows only")
    parser.add_argument("--no-install", action="store_true",
                        help="use etcd only if it is already installed (never run apt-get)")
    parser.add_argument("--no-grpc", action="store_true",
                        help="no etcd-grpc rows (etcd through its JSON gateway only)")
    parser.add_argument("--ops-max", type=int, default=PUTS_PER_AGENT_MAX_DEFAULT,
                        help="bound on operations per client per row")
    parser.add_argument("--poll-spin-us", type=int, default=None,
                        help="quorumboard replicas' poll_spin_us (default: theirs, 200; 0: "
                             "never poll): how long a replica serving a lone client polls "
                             "before it sleeps")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/peers.json"))
    args = parser.parse_args(argv)
    try:
        clients = [int(x) for x in _csv(args.clients, "--clients", parser)]
    except ValueError:
        parser.error("--clients: comma-separated integers")
    # More clients than keys would share keys, and compare-and-set would measure contention.
    if any(not 1 <= c <= KEYS for c in clients):
        parser.error(f"--clients: each between 1 and {KEYS} (clients own disjoint keys)")
    ops = _csv(args.ops, "--ops", parser)
    if any(op not in OPS for op in ops):
        parser.error(f"--ops: each one of {', '.join(OPS)}")
    fsync_words = _csv(args.fsync, "--fsync", parser)
    if any(w not in ("on", "off") for w in fsync_words):
        parser.error("--fsync: on, off or on,off")
    if not 0 < args.duration_s <= 600 or not 0 <= args.warmup_s <= 60:
        parser.error("--duration-s in (0, 600], --warmup-s in [0, 60]")
    if not 1 <= args.repeats <= 20 or args.ops_max < 1:
        parser.error("--repeats 1..20, --ops-max >= 1")
    if args.poll_spin_us is not None and not 0 <= args.poll_spin_us <= 10_000:
        parser.error("--poll-spin-us in 0..10000")
    return Config(clients=clients, ops=list(dict.fromkeys(ops)),
                  fsync=[w == "on" for w in dict.fromkeys(fsync_words)],
                  duration_s=args.duration_s, warmup_s=args.warmup_s, repeats=args.repeats,
                  etcd=not args.no_etcd, install=not args.no_install,
                  grpc=not args.no_grpc, ops_max=args.ops_max,
                  out=args.out, poll_spin_us=args.poll_spin_us)


def plan(cfg: Config, baselines: list[str]) -> Iterator[tuple[int, int, str, str, bool]]:
    """(repeat, clients, op, system, fsync) in run order: for each repeat, client count and op,
    quorumboard's first fsync setting, the etcd rows, then quorumboard's other setting, so each
    etcd run sits next to both quorumboard runs it is compared with."""
    for repeat in range(1, cfg.repeats + 1):
        for clients in cfg.clients:
            for op in cfg.ops:
                yield repeat, clients, op, QB, cfg.fsync[0]
                for base in baselines:
                    yield repeat, clients, op, base, True
                for fsync in cfg.fsync[1:]:
                    yield repeat, clients, op, QB, fsync


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    log: IO[str] = sys.stderr
    binary, etcd_skipped = "", ""
    if not cfg.etcd:
        etcd_skipped = "--no-etcd"
    else:
        try:
            binary = ensure_etcd(cfg.install)
        except EtcdUnavailable as exc:
            etcd_skipped = str(exc)
            print(f"etcd rows skipped: {etcd_skipped}", file=log, flush=True)
    grpc_skipped = "--no-grpc" if not cfg.grpc else grpc_client_missing()
    if binary and grpc_skipped and cfg.grpc:
        print(f"etcd gRPC rows skipped: {grpc_skipped}", file=log, flush=True)
    baselines = [ETCD, *([] if grpc_skipped else [ETCD_GRPC])] if binary else []
    rows: list[PeerRow] = []
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="qb-bench-peers-") as tmp:
            for repeat, clients, op, system, fsync in plan(cfg, baselines):
                workdir = Path(tmp) / f"{repeat}-{clients}-{op}-{system}-{int(fsync)}"
                workdir.mkdir()
                print(f"[{time.monotonic() - began:6.1f}s] repeat {repeat}/{cfg.repeats} "
                      f"{system}{' fsync' if fsync else ''}: {op}, {clients} client(s) ...",
                      file=log, flush=True)
                try:
                    row = (run_quorumboard(cfg, clients, op, fsync, workdir) if system == QB
                           else run_etcd(cfg, binary, clients, op, workdir, system))
                except Exception as exc:  # one failed row is reported, the others still run
                    row = PeerRow(system=system, agents=clients, processes=0, op=op,
                                  fsync=fsync, failed=f"{type(exc).__name__}: {exc}")
                    print(f"  run failed: {row.failed}", file=log, flush=True)
                row.repeat = repeat
                rows.append(row)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=log)
        return 130
    print(f"[{time.monotonic() - began:6.1f}s] done", file=log, flush=True)
    return finish(cfg.out, report(cfg, rows, etcd_skipped, grpc_skipped), any(r.failed for r in rows))


if __name__ == "__main__":
    sys.exit(main())
