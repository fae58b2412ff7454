"""The one operation of the policies that a proof's symbolic integer cannot intercept.

proofs/z3_checks.py runs the shipped policies on symbolic integers: ``int`` subclasses that carry
a z3 term and overload every operator the policies use, so each comparison becomes a formula and
each ``if`` on one a fork the proof explores. Only ``int(x)`` cannot be overloaded (it always
returns a plain ``int``, which would silently drop the term), so the policies coerce with
:func:`as_int`. Pure like the policies themselves: it imports nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_int"]


def as_int(value: Any) -> int:
    """``int(value)`` for every value the board stores; an ``int`` subclass (not ``bool``) passes
    through unchanged, so a proof's symbolic integer keeps its term."""
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return value  # the first test alone answers for production ints: ~as cheap as int()
    return int(value)
