"""The dataset distributor: cuts one dataset into the per-client shares of a job tree.

It runs once, at deploy time, on the deploying side; nodes only download their own share (and
the common test set) once the dataset flag is up. The cut depends only on the sheet and the
order of the leaf client slots, so re-planning the same job gives byte-identical shares.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hierfl.errors import BadInput
from hierfl.learning.data import encode_share, load_dataset, partition, train_test_split
from hierfl.sheet import JobSheet


@dataclass(frozen=True)
class DatasetPlan:
    """Encoded shares keyed by ``(cluster, client id)``, the encoded test set, and data shape."""

    shares: dict[tuple[str, str], bytes]
    test: bytes
    n_features: int
    n_classes: int


def plan_dataset(sheet: JobSheet, slots: list[tuple[str, str]]) -> DatasetPlan:
    """Load the sheet's dataset, split off the test set and partition the rest over ``slots``."""
    if not slots:
        raise BadInput(f"job {sheet.name}: no client slots to share the dataset between")
    if len(set(slots)) != len(slots):
        raise BadInput(f"job {sheet.name}: client slots are not unique")
    x, y = load_dataset(sheet.data)
    n_features, n_classes = int(x.shape[1]), int(y.max()) + 1
    _check_shape(sheet, n_features, n_classes)
    x_train, y_train, x_test, y_test = train_test_split(x, y, sheet.data.test_fraction, sheet.seed)
    parts = partition(y_train, len(slots), sheet.data, sheet.seed)
    shares = {
        slot: encode_share(x_train[idx], y_train[idx])
        for slot, idx in zip(slots, parts, strict=True)
    }
    return DatasetPlan(
        shares=shares, test=encode_share(x_test, y_test), n_features=n_features, n_classes=n_classes
    )


def _check_shape(sheet: JobSheet, n_features: int, n_classes: int) -> None:
    """A sheet that already states a data shape must agree with the data."""
    for key, stated, actual in (
        ("n_features", sheet.data.n_features, n_features),
        ("n_classes", sheet.data.n_classes, n_classes),
    ):
        if stated and stated != actual:
            raise BadInput(
                f"job {sheet.name}: [data].{key} = {stated}, but dataset "
                f"{sheet.data.dataset} has {actual}"
            )
    if n_classes < 2:
        raise BadInput(f"job {sheet.name}: dataset {sheet.data.dataset} has only one class")


def sheet_with_data_shape(sheet: JobSheet, plan: DatasetPlan) -> JobSheet:
    """The sheet nodes download: with ``n_features`` and ``n_classes`` filled in."""
    data = replace(sheet.data, n_features=plan.n_features, n_classes=plan.n_classes)
    return replace(sheet, data=data)


def share_sizes(plan: DatasetPlan) -> dict[tuple[str, str], int]:
    """Training samples per slot, read back from the encoded shares (for logs and checks)."""
    from hierfl.learning.data import decode_share

    return {slot: int(np.shape(decode_share(blob)[1])[0]) for slot, blob in plan.shares.items()}
