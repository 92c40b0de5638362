"""Seeded sections of torch's global RNG, safe when many nodes share one process.

Model initialisation (`nn.Linear` and any user factory) and dropout draw from torch's one global
generator. A node seeds it for each draw so its result depends only on the job's seed; with
several nodes as threads of one process (`hierfl simulate`), two seeded sections interleaving
would mix their draws, and two workers that must offer the same initial model would not. One
lock per process keeps each section whole; in a node process of its own it is never contended.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_GLOBAL_RNG = threading.RLock()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's global RNG seeded to `seed`, restoring it afterwards."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
