"""Estimator names -> classes; the one list of names the rest of the package asks.
Adding an estimator: its module here, its entry below, its kernel in the compiled
road (every place: DEVELOPERS.md, "Adding an estimator"). Imported lazily so that
naming an estimator does not load the others."""
from __future__ import annotations

import importlib

from ..errors import UserInputError
from .base import Estimator

# name -> (module in this package, class)
REGISTRY = {"padim": ("padim", "PaDiM"),
            "orthoad": ("orthoad", "OrthoAD"),
            "patchcore": ("patchcore", "PatchCore")}
NAMES = tuple(REGISTRY)


def make_estimator(name: str, **params) -> Estimator:
    if name not in REGISTRY:
        raise UserInputError(f"estimator: unknown {name!r}; use one of {', '.join(NAMES)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)(**params)
