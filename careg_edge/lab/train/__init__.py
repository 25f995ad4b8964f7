"""CAReg registration training on normal images (needs torch).

data.py: categories, the query + support draw, the applied transform;
losses.py: registration, self-registration and θ terms, the dead-step check;
diagnostics.py: val_cosine, val_slope, val_corr and the untrained reference;
loop.py: options, SGD loop, recovery, checkpoints, the log.
"""
from .data import (GOOD_FOLDERS, PairSampler, augment, discover, load_images, random_affine,
                   split_holdout, training_images)
from .diagnostics import (angle_fit, evaluate, heldout_cosine, heldout_rotation,
                          registration_cosine, rotation_theta, theta_angle)
from .losses import StepTerms, dead_reason, step_loss, step_terms, theta_loss
from .loop import (TrainConfig, TrainingInterrupted, build, check_options, normaliser, recover,
                   set_train_mode, theta_weight_at, train)

__all__ = [
    "GOOD_FOLDERS", "PairSampler", "StepTerms", "TrainConfig", "TrainingInterrupted", "angle_fit", "augment", "build",
    "check_options", "dead_reason", "discover", "evaluate", "heldout_cosine", "heldout_rotation",
    "load_images", "normaliser", "random_affine", "recover", "registration_cosine",
    "rotation_theta", "set_train_mode", "split_holdout", "step_loss", "step_terms", "theta_angle",
    "theta_loss", "theta_weight_at", "train", "training_images",
]
