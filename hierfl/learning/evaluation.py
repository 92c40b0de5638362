"""Test-set evaluation: accuracy and mean cross-entropy, without touching gradients."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hierfl.errors import BadInput
from hierfl.learning.training import single_thread

_CHUNK = 4096


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy loss)`` of ``model`` on ``(x, y)``."""
    if len(x) == 0 or len(x) != len(y):
        raise BadInput(f"cannot evaluate on {len(x)} samples with {len(y)} labels")
    features = torch.as_tensor(np.asarray(x, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(y, dtype=np.int64))
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        single_thread()
        with torch.no_grad():
            for start in range(0, len(labels), _CHUNK):
                logits = model(features[start : start + _CHUNK])
                target = labels[start : start + _CHUNK]
                loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
                correct += int((logits.argmax(dim=1) == target).sum())
    finally:
        model.train(was_training)
    return correct / len(labels), loss_sum / len(labels)
