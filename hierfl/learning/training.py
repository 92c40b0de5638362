"""Local training on one client's share: plain minibatch epochs on the CPU.

The result depends only on the model's parameters, the data, the config and the seed (the batch
order and any dropout come from a seeded section of the global RNG, see `hierfl.learning.rng`, and
the maths runs on one thread), so a re-run of a client's round reproduces its submission.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from hierfl.errors import BadInput
from hierfl.learning.rng import seeded
from hierfl.sheet import TrainingConfig


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for one (job seed, labels...) combination, e.g. cluster, client, round."""
    text = "\x1f".join(str(part) for part in (seed, *labels))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def single_thread() -> None:
    """Run torch on one thread from now on (idempotent).

    Tiny models train faster on one thread, results do not depend on the thread count, and many
    node processes on a small machine do not oversubscribe its cores. Set once rather than
    toggled per call: each change of the thread count rebuilds torch's thread pool (~10 ms).
    """
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    raise BadInput(f"[training].optimizer {cfg.optimizer!r} is not one of sgd, adam")


def train_local(
    model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainingConfig, seed: int
) -> float:
    """Train ``model`` in place for ``cfg.local_epochs`` epochs; returns the mean batch loss."""
    if len(x) == 0 or len(x) != len(y):
        raise BadInput(f"cannot train on {len(x)} samples with {len(y)} labels")
    features = torch.as_tensor(np.asarray(x, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(y, dtype=np.int64))
    optimizer = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    model.train()
    single_thread()
    with seeded(seed):
        for _ in range(cfg.local_epochs):
            order = torch.randperm(len(labels))
            for batch in order.split(cfg.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(features[batch]), labels[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                count += len(batch)
    return total / count if count else 0.0
