"""Statistical estimators fitted on support features: PaDiM, OrthoAD, PatchCore."""
from .base import Estimator, Fitted  # noqa: F401
from .registry import NAMES, make_estimator  # noqa: F401
