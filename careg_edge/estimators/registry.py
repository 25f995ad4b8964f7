"""Estimator names -> classes; the one list of names the rest of the package asks.
Everything per estimator (its profile tensors, how they reach the compiled Scorer,
its GPU kernel, its tail-prior fallback) is declared on its class (base.Estimator)
and read through `estimator_class`. Adding an estimator: its module here, its entry
below, its kernel in the compiled road (DEVELOPERS.md, "Adding an estimator").
Imported lazily so that naming an estimator does not load the others."""
from __future__ import annotations

import importlib
from typing import Type

from ..errors import UserInputError
from .base import Estimator

# name -> (module in this package, class)
REGISTRY = {"padim": ("padim", "PaDiM"),
            "orthoad": ("orthoad", "OrthoAD"),
            "patchcore": ("patchcore", "PatchCore")}
NAMES = tuple(REGISTRY)


def estimator_class(name: str) -> Type[Estimator]:
    """The class registered as `name` (its module is imported on first use)."""
    if name not in REGISTRY:
        raise UserInputError(f"estimator: unknown {name!r}; use one of {', '.join(NAMES)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def make_estimator(name: str, **params) -> Estimator:
    return estimator_class(name)(**params)
