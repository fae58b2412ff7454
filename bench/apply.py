"""CPU per committed put on the apply path, and per step of one client's put and get codec.

``python -m bench.apply`` (from the repository root) builds one replica's state machine in
this process (no Raft, no sockets) with the ``last-writer-wins`` policy bound to ``peers/`` as
``bench.peers`` binds it, writes 100 keys of 256-byte values, and then measures, in CPU time
(``time.process_time_ns``: other load on a shared machine inflates it far less than wall
time), the best and the median of ``--repeats`` runs of ``--entries`` calls each:

* ``apply put``: ``ReplicaMachine.apply`` of one group-commit batch holding one put (decode the
  msgpack, validate the proposal, apply it under its session, build the result): what every
  replica does once per committed put, the leader before it answers;
* the client's and the leader's codec steps of one put and one linearizable get (build and
  encode a request, decode and validate it, build and encode the reply, decode it).

Sockets, wake-ups and the Raft layer are not in these figures (bench.peers and bench/README.md
measure them). Prints one line per step; the exit status is 0.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from quorumboard.consensus.core.model import OpenSession, Proposal, PutCmd, SetPolicyCmd
from quorumboard.consensus.core.policies import registry
from quorumboard.consensus.logs import configure_logging
from quorumboard.consensus.replica.batching import pack_batch
from quorumboard.consensus.replica.machine import ReplicaConfig, ReplicaMachine
from quorumboard.consensus.wire.protocol import ProposeReq, ReadReq, Reply, decode_request, encode

KEYS = 100
VALUE_BYTES = 256
AGENT = "bench-apply"


def _cpu_us(fn: Callable[[int], object], calls: int, repeats: int) -> tuple[float, float]:
    """(best, median) µs of CPU per call of ``fn(i)``, over ``repeats`` runs of ``calls``."""
    runs = []
    for r in range(repeats):
        start = time.process_time_ns()
        for i in range(r * calls, (r + 1) * calls):
            fn(i)
        runs.append((time.process_time_ns() - start) / calls / 1000)
    return min(runs), statistics.median(runs)


def _log_entry(request: bytes) -> bytes:
    """What the leader's endpoint does with a put's request before Raft has it."""
    req = decode_request(request)
    if not isinstance(req, ProposeReq):
        raise TypeError(f"not a proposal: {req!r}")
    return pack_batch([encode(req.proposal)])


def measure(entries: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Each step's (best, median) µs of CPU per call."""
    value = "v" * VALUE_BYTES
    keys = [f"peers/k{i:03d}" for i in range(KEYS)]
    with tempfile.TemporaryDirectory() as tmp:
        config = ReplicaConfig(name="bench", raft_address="127.0.0.1:1",
                               client_address="127.0.0.1:2", data_dir=Path(tmp))
        machine = ReplicaMachine(config, registry.snapshot())

        def commit(proposal: Proposal) -> object:
            return machine.apply(pack_batch([encode(proposal)]))

        commit(Proposal(agent=AGENT, command=SetPolicyCmd(prefix="peers/",
                                                           name="last-writer-wins")))
        opened = commit(Proposal(agent=AGENT, command=OpenSession()))
        session = opened[0].session if isinstance(opened, list) else None
        if not session:
            raise RuntimeError(f"no session opened: {opened!r}")
        for key in keys:
            commit(Proposal(agent=AGENT, command=PutCmd(key=key, value=value)))

        def put_proposal(i: int) -> Proposal:
            return Proposal(agent=AGENT, session=session, seq=i + 1, acked_below=i + 1,
                            command=PutCmd(key=keys[i % KEYS], value=value))

        # Built ahead: the apply figure is the replica's work alone. Sequence numbers grow,
        # so each is a new request of the session, never a cached retry.
        payloads = [pack_batch([encode(put_proposal(i))]) for i in range(entries * repeats)]
        out = {"apply put": _cpu_us(lambda i: machine.apply(payloads[i]), entries, repeats)}

        put_req = encode(ProposeReq(id=1, proposal=put_proposal(entries * repeats)))
        results = machine.apply(payloads[-1])
        result = results[0] if isinstance(results, list) else None
        put_reply = encode(Reply(id=1, result=result))
        state = machine.state
        entry = state.entry(keys[0])
        get_req = encode(ReadReq(id=1, what="get", key=keys[0]))
        get_reply = encode(Reply(id=1, revision=state.revision, entry=entry))
        steps: dict[str, Callable[[int], object]] = {
            "client: build and encode a put": lambda i: encode(
                ProposeReq(id=i, proposal=put_proposal(i))),
            "leader: decode a put request, encode its log entry": lambda i: _log_entry(put_req),
            "leader: build and encode a put's reply": lambda i: encode(
                Reply(id=i, result=result)),
            "client: decode a put's reply": lambda i: Reply.model_validate(
                msgpack.unpackb(put_reply, raw=False)),
            "client: build and encode a get": lambda i: encode(
                ReadReq(id=i, what="get", key=keys[i % KEYS])),
            "leader: decode a get request": lambda i: decode_request(get_req),
            "leader: read the entry, build and encode the reply": lambda i: encode(Reply(
                id=i, revision=state.revision, entry=state.entry(keys[i % KEYS]))),
            "client: decode a get's reply": lambda i: Reply.model_validate(
                msgpack.unpackb(get_reply, raw=False)),
        }
        for name, fn in steps.items():
            out[name] = _cpu_us(fn, entries, repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apply", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--entries", type=int, default=5_000, help="calls per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per step")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.repeats < 1:
        parser.error("--entries and --repeats must be positive")
    configure_logging("warning")  # as a replica runs: its per-commit debug line filtered out
    for name, (best, median) in measure(args.entries, args.repeats).items():
        print(f"{best:8.1f} {median:8.1f}  µs CPU (best, median)  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
