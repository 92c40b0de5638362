"""Datasets, the train/test split, and partitions of the training set over clients.

Everything here is a pure function of its inputs and a seed, so the distributor, the tests and a
re-deployment all cut the same shares. Shares travel as safetensors bytes like parameters do.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hierfl.errors import BadInput, IntegrityError
from hierfl.learning.params import from_bytes, to_bytes
from hierfl.sheet import DataConfig

#: Dirichlet draws are repeated until every part has this many samples (or n // (2 * parts)).
MIN_PART_SIZE = 10
_DIRICHLET_ATTEMPTS = 100

# Distinct stream tags so the split and the partition draw independent random numbers.
_SPLIT, _IID, _DIRICHLET, _SHARDS = 1, 2, 3, 4


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag])


# --- loading ---------------------------------------------------------------------------------


def load_dataset(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Features as float32 ``[n, d]`` and labels as int64 ``[n]`` (labels are ``0..K-1``)."""
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    path = Path(cfg.dataset)
    if not path.is_file():
        raise BadInput(
            f"dataset {path}: file not found ([data].dataset; a relative path is "
            "relative to the job sheet)"
        )
    if path.suffix.lower() == ".npz":
        x, y = _load_npz(path)
    elif path.suffix.lower() == ".csv":
        x, y = _load_csv(path)
    else:
        raise BadInput(f"dataset {path}: expected a .npz or .csv file")
    return _check_arrays(path, x, y)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise BadInput(
                    f"dataset {path}: missing array(s) {', '.join(missing)}; the .npz "
                    f"must hold arrays 'x' and 'y' (found: {', '.join(archive.files)})"
                )
            return archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        raise BadInput(f"dataset {path}: cannot read it as .npz: {exc}") from None


def _load_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Numeric CSV, last column the label; a non-numeric first row is taken as a header."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]
    if not rows:
        raise BadInput(f"dataset {path}: no data rows")
    width = len(rows[0])
    if width < 2:
        raise BadInput(
            f"dataset {path}: needs at least 2 columns (features, then the label), got {width}"
        )
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise BadInput(
                f"dataset {path}: data row {i + 1} has {len(row)} columns, expected {width}"
            )
        try:
            values[i] = [float(cell) for cell in row]
        except ValueError:
            raise BadInput(f"dataset {path}: data row {i + 1} has a non-numeric value") from None
    return values[:, :-1], values[:, -1]


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _check_arrays(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise BadInput(
            f"dataset {path}: expected x [n, d...] and y [n] with n > 0, got shapes "
            f"{list(x.shape)} and {list(y.shape)}"
        )
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise BadInput(f"dataset {path}: features must be finite numbers")
    if not np.issubdtype(y.dtype, np.number) or np.any(y < 0) or np.any(y != np.round(y)):
        raise BadInput(f"dataset {path}: labels must be non-negative integers (class ids)")
    return x.reshape(len(x), -1).astype(np.float32), y.astype(np.int64)


# --- split and partition ---------------------------------------------------------------------


def train_test_split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``, stratified: each class gives ``fraction`` of
    itself (rounded) to the test set, keeping at least one sample for training."""
    if not 0 < fraction < 1:
        raise BadInput(f"test fraction must be between 0 and 1, got {fraction}")
    rng = _rng(seed, _SPLIT)
    test: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = min(round(fraction * len(members)), len(members) - 1)
        test.append(members[:n_test])
    test_idx = np.sort(np.concatenate(test))
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[test_idx] = False
    if not test_idx.size:
        raise BadInput(f"test fraction {fraction} of {len(y)} samples leaves no test samples")
    return x[train_mask], y[train_mask], x[test_idx], y[test_idx]


def partition(y: np.ndarray, n_parts: int, cfg: DataConfig, seed: int) -> list[np.ndarray]:
    """Split sample indices into ``n_parts`` disjoint, covering, non-empty, sorted parts."""
    if n_parts < 1:
        raise BadInput(f"cannot partition data over {n_parts} clients")
    if len(y) < n_parts:
        raise BadInput(f"{len(y)} training samples cannot be shared by {n_parts} clients")
    if cfg.partition == "iid":
        parts = np.array_split(_rng(seed, _IID).permutation(len(y)), n_parts)
    elif cfg.partition == "dirichlet":
        parts = _dirichlet(y, n_parts, cfg.alpha, _rng(seed, _DIRICHLET))
    elif cfg.partition == "shards":
        parts = _shards(y, n_parts, cfg.shards_per_client, _rng(seed, _SHARDS))
    else:
        raise BadInput(f"[data].partition {cfg.partition!r} is not one of iid, dirichlet, shards")
    return [np.sort(p).astype(np.int64) for p in parts]


def _dirichlet_draw(
    y: np.ndarray, n_parts: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each class is spread over the parts with proportions drawn from Dir(alpha)."""
    buckets: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        shares = rng.dirichlet(np.full(n_parts, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for bucket, chunk in zip(buckets, np.split(members, cuts), strict=True):
            bucket.append(chunk)
    return [np.concatenate(b) for b in buckets]


def _dirichlet(
    y: np.ndarray, n_parts: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Redraw until every part has a few samples; after many tries, top up the smallest."""
    floor = max(1, min(MIN_PART_SIZE, len(y) // (2 * n_parts)))
    best: list[np.ndarray] = []
    for _ in range(_DIRICHLET_ATTEMPTS):
        parts = _dirichlet_draw(y, n_parts, alpha, rng)
        if min(len(p) for p in parts) >= floor:
            return parts
        if not best or min(len(p) for p in parts) > min(len(p) for p in best):
            best = parts
    return _top_up(best, floor)


def _top_up(parts: list[np.ndarray], floor: int) -> list[np.ndarray]:
    """Move samples from the largest part to any part below ``floor`` (deterministic)."""
    parts = [p.copy() for p in parts]
    for i in range(len(parts)):
        while len(parts[i]) < floor:
            donor = max(range(len(parts)), key=lambda j: (len(parts[j]), -j))
            need = min(floor - len(parts[i]), len(parts[donor]) - floor)
            parts[i] = np.concatenate([parts[i], parts[donor][-need:]])
            parts[donor] = parts[donor][:-need]
    return parts


def _shards(
    y: np.ndarray, n_parts: int, per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Sort by label, cut into ``n_parts * per_client`` shards, deal them out at random."""
    n_shards = n_parts * per_client
    if len(y) < n_shards:
        raise BadInput(
            f"{len(y)} training samples cannot be cut into {n_shards} shards "
            f"({n_parts} clients x [data].shards_per_client = {per_client})"
        )
    shuffled = rng.permutation(len(y))
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]
    shards = np.array_split(by_label, n_shards)
    order = rng.permutation(n_shards)
    return [
        np.concatenate([shards[s] for s in order[i * per_client : (i + 1) * per_client]])
        for i in range(n_parts)
    ]


# --- shares on the wire ----------------------------------------------------------------------


def encode_share(x: np.ndarray, y: np.ndarray) -> bytes:
    """One client's data as safetensors bytes (``x`` float32, ``y`` int64)."""
    return to_bytes({"x": np.asarray(x, dtype=np.float32), "y": np.asarray(y, dtype=np.int64)})


def decode_share(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_share`; a blob that is not a well-formed share is an IntegrityError."""
    arrays = from_bytes(data)
    if set(arrays) != {"x", "y"}:
        raise IntegrityError(f"dataset share must hold tensors 'x' and 'y', got {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    if (
        x.dtype != np.float32
        or y.dtype != np.int64
        or x.ndim != 2
        or y.ndim != 1
        or len(x) != len(y)
    ):
        raise IntegrityError(
            f"dataset share has x {x.dtype}{list(x.shape)} and y "
            f"{y.dtype}{list(y.shape)}; expected float32 [n, d] and int64 [n]"
        )
    return x, y
