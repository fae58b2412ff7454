"""What travels between processes, sans I/O: length-prefixed frames with a size bound,
shared-secret authentication of a connection, and the client protocol's messages (msgpack, every
message a validated model). The sockets live in :mod:`~quorumboard.consensus.client` and
:mod:`~quorumboard.consensus.replica`.
"""
