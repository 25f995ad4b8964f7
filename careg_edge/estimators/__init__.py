"""Statistical estimators fitted on support features: PaDiM, OrthoAD, PatchCore."""
from .base import Estimator, Fitted, make_estimator  # noqa: F401
