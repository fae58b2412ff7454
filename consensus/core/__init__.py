"""The pure core: records, conflict policies, the replicated state machine (``apply``, digest,
snapshot) and lease arithmetic.

Nothing here touches a socket, a thread, a clock, randomness, the OS or pysyncobj (a test parses
every module of this package to keep it so): the same log gives the same state on every replica,
and every rule can be tested, model-checked and proved without a cluster.
"""
