"""A replica: the state machine on a Raft node, the client endpoint, group commit, and the
process entry point (``python -m quorumboard.consensus.replica CONFIG``).
"""
