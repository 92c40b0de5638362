"""Deterministic aggregation of member submissions into a cluster's new parameters.

Honest workers must produce byte-identical results so consensus can vote on digests. So the
submissions are put in a fixed order (by member id), every sum runs in float64, and the result is
cast back to each tensor's input dtype. The robust rules sort values coordinate-wise, which is
order-independent by construction.
"""

from __future__ import annotations

import math

import numpy as np

from hierfl.errors import BadInput, IntegrityError
from hierfl.learning.params import Params, check_like
from hierfl.sheet import RULES

Submission = tuple[str, Params, int]


def aggregate(submissions: list[Submission], rule: str = "fedavg", trim: float = 0.1) -> Params:
    """Combine ``(member id, params, sample count)`` submissions with ``rule``."""
    ordered = _validated(submissions, rule, trim)
    reference = ordered[0][1]
    result: Params = {}
    for name in sorted(reference):
        stack = [params[name] for _, params, _ in ordered]
        if rule == "fedavg":
            value = _weighted_mean(stack, [weight for _, _, weight in ordered])
        elif rule == "median":
            value = np.median(np.stack(stack).astype(np.float64), axis=0)
        else:
            value = _trimmed_mean(stack, trim)
        result[name] = _cast(value, reference[name].dtype)
    return result


def _validated(submissions: list[Submission], rule: str, trim: float) -> list[Submission]:
    if rule not in RULES:
        raise BadInput(f"aggregation rule {rule!r} is not one of {', '.join(RULES)}")
    if not 0 <= trim < 0.5:
        raise BadInput(f"trim must be in [0, 0.5), got {trim}")
    if not submissions:
        raise BadInput("nothing to aggregate: no submissions")
    ordered = sorted(submissions, key=lambda s: s[0])
    ids = [member for member, _, _ in ordered]
    duplicates = sorted({m for m in ids if ids.count(m) > 1})
    if duplicates:
        raise BadInput(f"member {duplicates[0]} submitted more than once")
    reference = ordered[0][1]
    checked: set[int] = set()
    for member, params, weight in ordered:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise BadInput(
                f"member {member}: weight (sample count) must be positive, got {weight!r}"
            )
        if id(params) in checked:
            continue  # the same parameters under another member (an unchanged global)
        try:
            check_like(params, reference)
        except IntegrityError as exc:
            raise IntegrityError(f"member {member}: {exc} (as in member {ordered[0][0]})") from None
        checked.add(id(params))
    return ordered


def _weighted_mean(stack: list[np.ndarray], weights: list[float]) -> np.ndarray:
    # The sequential float64 sum of weight * value, then one division (what every worker
    # computes bit for bit); each term goes through one buffer, not two new arrays.
    total = np.zeros(stack[0].shape, dtype=np.float64)
    term = np.empty_like(total)
    for array, weight in zip(stack, weights, strict=True):
        np.copyto(term, array, casting="unsafe")
        term *= float(weight)
        total += term
    total /= float(sum(weights))
    return total


def _trimmed_mean(stack: list[np.ndarray], trim: float) -> np.ndarray:
    """Mean of the values left after cutting ``floor(trim * n)`` from each end per coordinate."""
    values = np.sort(np.stack(stack).astype(np.float64), axis=0)
    cut = math.floor(trim * len(stack))
    return values[cut : len(stack) - cut].mean(axis=0)


def _cast(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        value = np.rint(value)
    return np.asarray(value, dtype=np.float64).astype(dtype, order="C")
