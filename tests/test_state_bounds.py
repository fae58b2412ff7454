"""The pure state machine's bounds and laws found by a cold review: a claim respects the key
limit, and counter merges do not depend on the order they apply in."""

from __future__ import annotations

from quorumboard.consensus.core.model import ClaimCmd, Proposal, PutCmd, SetPolicyCmd
from quorumboard.consensus.core.policies import PolicyRegistry
from quorumboard.consensus.core.state import BoardState, Limits, apply
from tests.review_helpers import require

BUILTINS = PolicyRegistry()
"""The built-in policies only: ``apply`` takes its registry as an argument."""




# ------------------------------------------------------------- pure state machine


def _p(cmd: object, agent: str = "a") -> Proposal:
    return Proposal.model_validate({"agent": agent, "command": cmd})


def test_claim_respects_keys_max() -> None:
    s = BoardState(Limits(keys_max=2))
    for key in ("k/1", "k/2"):
        applied = apply(s, _p(PutCmd(key=key, value=1)), BUILTINS)
        require(applied.result.error is None, "fill to quota")
    refused = apply(s, _p(PutCmd(key="k/3", value=1)), BUILTINS).result.error
    require(refused is not None and refused.reason == "quota", "put is refused at the quota")
    for i in range(5):
        apply(s, _p(ClaimCmd(key=f"task/{i}", ttl=60)), BUILTINS)
    assert len(s.kv) <= s.limits.keys_max, f"{len(s.kv)} keys with keys_max=2"


def test_counter_merge_is_order_independent() -> None:
    def run(deltas: list[float]) -> object:
        s = BoardState()
        apply(s, _p(SetPolicyCmd(prefix="c/", name="merge", params={"kind": "counter"})),
              BUILTINS)
        for d in deltas:
            err = apply(s, _p(PutCmd(key="c/x", value=d)), BUILTINS).result.error
            require(err is None, f"delta {d} accepted")
        entry = s.entry("c/x")
        return entry.value if entry else None

    # The README's law is exact for integer deltas (the CRDT case) ...
    forward, backward = run([1, 20, 300]), run([300, 20, 1])
    assert forward == backward == 321, f"same deltas, different order: {forward!r} != {backward!r}"
    # ... and says float deltas are order-dependent up to rounding: both hold here.
    f, b = run([0.1, 0.2, 0.3]), run([0.3, 0.2, 0.1])
    assert isinstance(f, float) and isinstance(b, float) and abs(f - b) < 1e-12


