"""Model parameters as safetensors bytes.

Parameters cross trust boundaries (a peer uploads them, others download them), so they travel as
safetensors, never pickle: decoding a blob cannot run code. Encoding is deterministic, so equal
parameters give equal bytes and equal digests; consensus between workers is a vote on digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from hierfl.errors import IntegrityError

if TYPE_CHECKING:  # torch is imported where models are, so the CLI starts fast
    import torch

Params = dict[str, np.ndarray]


def _canonical(name: str, value: np.ndarray) -> np.ndarray:
    """A C-contiguous, little-endian array (what safetensors stores byte for byte)."""
    if not isinstance(name, str) or not name:
        raise IntegrityError(f"parameter names must be non-empty strings, got {name!r}")
    if not isinstance(value, np.ndarray | np.generic):
        raise IntegrityError(f"tensor {name!r} is a {type(value).__name__}, not a numpy array")
    array = np.asarray(value, order="C")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"), order="C")
    return array


def to_bytes(params: Mapping[str, np.ndarray]) -> bytes:
    """Encode deterministically: same names, shapes, dtypes and values give identical bytes."""
    arrays = {name: _canonical(name, params[name]) for name in sorted(params)}
    try:
        return _st_save(arrays)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise IntegrityError(f"cannot encode parameters: {exc}") from None


def from_bytes(data: bytes) -> Params:
    """Decode a blob into writable arrays, sorted by name; a malformed blob is an IntegrityError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise IntegrityError(f"parameter blob must be bytes, got {type(data).__name__}")
    try:
        loaded = _st_load(bytes(data))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise IntegrityError(f"malformed parameter blob ({len(data)} bytes): {exc}") from None
    return {name: np.array(loaded[name], copy=True) for name in sorted(loaded)}


def digest(data: bytes) -> str:
    """The content address of a blob: sha256 in hex."""
    return hashlib.sha256(data).hexdigest()


def check_like(params: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    """Refuse parameters that cannot stand in for ``reference``, naming the first bad tensor."""
    missing = sorted(set(reference) - set(params))
    extra = sorted(set(params) - set(reference))
    if missing:
        raise IntegrityError(f"tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    if extra:
        raise IntegrityError(f"tensor {extra[0]!r} is not expected ({len(extra)} extra in all)")
    for name in sorted(reference):
        got, want = params[name], reference[name]
        if not isinstance(got, np.ndarray):
            raise IntegrityError(f"tensor {name!r} is a {type(got).__name__}, not a numpy array")
        if got.shape != want.shape:
            raise IntegrityError(
                f"tensor {name!r} has shape {list(got.shape)}, expected {list(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise IntegrityError(f"tensor {name!r} has dtype {got.dtype}, expected {want.dtype}")
        if np.issubdtype(got.dtype, np.inexact) and not np.isfinite(got).all():
            bad = int(np.size(got) - np.count_nonzero(np.isfinite(got)))
            raise IntegrityError(f"tensor {name!r} has {bad} non-finite value(s) (NaN or inf)")


def from_model(model: torch.nn.Module) -> Params:
    """A module's state_dict as float32 numpy arrays, sorted by name."""
    import torch

    state = model.state_dict()
    return {
        name: state[name].detach().cpu().to(torch.float32).numpy().copy() for name in sorted(state)
    }


def into_model(model: torch.nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Load parameters into a module, cast to each tensor's own dtype, after checking them."""
    import torch

    check_like(params, from_model(model))
    state = model.state_dict()
    new_state = {
        name: torch.from_numpy(np.array(params[name], copy=True)).to(state[name].dtype)
        for name in state
    }
    model.load_state_dict(new_state, strict=True)
