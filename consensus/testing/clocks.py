"""The leader's lease clock as an injectable time source, and the clock fault a nemesis drives.

Lease expiry is the one decision made from a clock (the leader proposes it, every replica applies
it through the log; see :mod:`consensus.leases`). To test what a wrong clock does to that
decision, a replica started with ``ReplicaConfig.clock_fault_file`` reads its lease clock through
:class:`FaultClock`: the monotonic clock, shifted by jumps and scaled by a rate that a nemesis
sets at run time by replacing a small msgpack file (:func:`write_clock_fault`). The file is local
to the replica's data dir, so only whoever can already write there can skew the clock; replicas
without the setting never look at it.

The fault clock is continuous apart from the jumps the file asks for: a new rate applies from
the moment it is read, and each jump applies once (the file carries a serial number).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ClockFault", "FaultClock", "read_clock_fault", "write_clock_fault"]

log = structlog.get_logger("quorumboard.consensus.testing.clocks")

CLOCK_FILE_BYTES_MAX = 4096
JUMP_S_MAX = 1e6
RATE_MIN = 0.001
RATE_MAX = 1000.0


class ClockFault(BaseModel):
    """What a replica's lease clock should do from now on. ``serial`` increases with every
    write so a jump is applied exactly once; ``rate`` 1.0 and no jump is a healthy clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    serial: int = Field(ge=0)
    jump_s: float = Field(default=0.0, ge=-JUMP_S_MAX, le=JUMP_S_MAX)
    rate: float = Field(default=1.0, ge=RATE_MIN, le=RATE_MAX)


def write_clock_fault(path: Path, fault: ClockFault) -> None:
    """Replace the control file atomically (write a temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgpack.packb(fault.model_dump(), use_bin_type=True))
    os.replace(tmp, path)


def read_clock_fault(path: Path) -> ClockFault | None:
    """The fault in ``path``; ``None`` if there is no file. Raises ``ValueError`` saying what
    is wrong with a file that exists but is not a valid fault."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) > CLOCK_FILE_BYTES_MAX:
        raise ValueError(f"{path}: {len(data)} bytes, more than {CLOCK_FILE_BYTES_MAX}")
    try:
        return ClockFault.model_validate(msgpack.unpackb(data, raw=False))
    except (ValidationError, ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"{path}: not a clock fault ({type(exc).__name__})") from None


class FaultClock:
    """Monotonic seconds, shifted and scaled as ``path`` says (checked on every call: one
    ``stat``). An unreadable file is logged and ignored: the clock keeps its last behaviour."""

    def __init__(self, path: Path, base: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._base = base
        self._anchor_base = base()
        self._anchor_value = self._anchor_base
        self._rate = 1.0
        self._serial = -1
        self._stamp: tuple[int, int, int] | None = None

    def __call__(self) -> float:
        now = self._base()
        self._reload(now)
        return self._anchor_value + (now - self._anchor_base) * self._rate

    def _reload(self, now: float) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            fault = read_clock_fault(self.path)
        except (ValueError, OSError) as exc:
            log.error("clock fault file ignored", error=str(exc))
            return
        if fault is None or fault.serial == self._serial:
            return
        value = self._anchor_value + (now - self._anchor_base) * self._rate
        self._anchor_base, self._anchor_value = now, value + fault.jump_s
        self._rate, self._serial = fault.rate, fault.serial
        log.warning("lease clock fault", jump_s=fault.jump_s, rate=fault.rate,
                    serial=fault.serial)
