"""Raft: the hardened pysyncobj node (:mod:`.node`), its authenticated transport and the
journal and snapshot files it keeps (:mod:`.journal`). Only the replica imports this package.
"""
