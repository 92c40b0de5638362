"""Small pieces of wording shared by the messages users read."""

from __future__ import annotations

_SINGULAR = {"processes": "process"}


def counted(n: int, plural: str) -> str:
    """``3 rounds``, ``1 round``: a count with its noun, singular for one."""
    if n == 1:
        return f"1 {_SINGULAR.get(plural, plural.removesuffix('s'))}"
    return f"{n} {plural}"
