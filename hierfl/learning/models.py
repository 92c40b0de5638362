"""Model construction: the built-in MLP, or a user factory named ``package.module:factory``.

Initialisation is deterministic for a given seed and leaves the global torch RNG untouched, so
every node that builds the model for the same sheet and seed gets the same initial parameters.
"""

from __future__ import annotations

import importlib
import itertools

from torch import nn

from hierfl.errors import BadInput
from hierfl.learning.rng import seeded
from hierfl.sheet import ModelConfig


def build_model(cfg: ModelConfig, n_features: int, n_classes: int, seed: int) -> nn.Module:
    """A fresh model for ``n_features`` inputs and ``n_classes`` outputs."""
    if n_features < 1 or n_classes < 2:
        raise BadInput(
            f"cannot build model {cfg.name!r}: data shape unknown or too small "
            f"(n_features={n_features}, n_classes={n_classes}); the distributor "
            "fills [data].n_features and [data].n_classes at deploy time"
        )
    with seeded(seed):
        if cfg.name == "mlp":
            return mlp(n_features, list(cfg.hidden), n_classes)
        return _from_factory(cfg, n_features, n_classes)


def mlp(n_features: int, hidden: list[int], n_classes: int) -> nn.Sequential:
    """Linear layers with ReLU in between; no hidden layers is multinomial logistic regression."""
    sizes = [n_features, *hidden, n_classes]
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


def _from_factory(cfg: ModelConfig, n_features: int, n_classes: int) -> nn.Module:
    module_name, _, attr = cfg.name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"[model].name {cfg.name!r}: cannot import the factory: {exc}") from None
    if not callable(factory):
        raise BadInput(f"[model].name {cfg.name!r} is not callable")
    try:
        model = factory(n_features=n_features, n_classes=n_classes, **cfg.kwargs)
    except TypeError as exc:
        raise BadInput(
            f"[model].name {cfg.name!r}: calling the factory with n_features, "
            f"n_classes and [model].kwargs failed: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise BadInput(
            f"[model].name {cfg.name!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model
