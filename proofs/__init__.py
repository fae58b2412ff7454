"""Machine-checked models (SPIN/Promela) and z3 proofs of quorumboard's laws.

``quorumboard prove`` (or ``make -C proofs``) re-checks everything and prints one table row per
property; see ``proofs/README.md``.
"""
