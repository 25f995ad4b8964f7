"""The enrolled-product profile (`.careg`): estimator state + everything needed to
trust it (encoder identity, feature layout, augmentations, threshold, calibration).

Stored as a `careg_edge.container` of kind `careg-profile` version 1 (spec:
docs/profile-format.md). Flat string metadata keys are what the C++ reader needs;
`profile` (JSON) holds the rest. Every file is untrusted on read: shapes and
dtypes of the estimator's tensors are checked against the metadata before use.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .container import metadata_json, parse_container, read_container, write_container
from .errors import BadHeader, EncoderMismatch, UserInputError
from .estimators.registry import NAMES as ESTIMATORS
from .estimators.registry import estimator_class

KIND = "careg-profile"
VERSION = 1
FLAT_KEYS = ("estimator", "threshold", "grid_h", "grid_w", "image_h", "image_w", "sigma",
             "encoder_hash")
# Optional flat key, written only when the rule is not "max" so that max-rule profiles
# stay byte-identical to those written before it existed.
IMAGE_SCORE_KEY = "image_score"
# info key of the threshold changes made after enrollment (careg-edge calibrate, run --learn)
HISTORY_KEY = "threshold_history"
# top<P>% with P spelled digits[.digits]: the one spelling the C++ reader accepts too.
_TOP_RULE = re.compile(r"top([0-9]+(?:\.[0-9]+)?)%")


@dataclass
class Profile:
    estimator: str
    tensors: Dict[str, np.ndarray]
    threshold: float
    grid: Tuple[int, int]           # (grid_h, grid_w) of the scored feature grid
    image_size: Tuple[int, int]     # encoder input (H, W): the frame the map is blurred in
    sigma: float
    encoder_hash: str
    info: dict = field(default_factory=dict)   # the `profile` JSON (spec, augment, calib...)
    path: Optional[str] = None

    def __repr__(self) -> str:  # the dataclass repr would print every tensor
        k = self.info.get("support", {}).get("k", "?")
        return (f"Profile({self.estimator}, K={k}, threshold={self.threshold:.4g}, "
                f"grid={self.grid[0]}x{self.grid[1]}, {self.nbytes / 1e6:.1f} MB, "
                f"encoder {self.encoder_hash[:12]}{', ' + self.path if self.path else ''})")

    # ---- writing -------------------------------------------------------------------
    @property
    def image_score(self) -> str:
        """The image-score rule (profiles without one were scored by the maximum)."""
        return self.info.get(IMAGE_SCORE_KEY, "max")

    def metadata(self) -> Dict[str, str]:
        meta = {"estimator": self.estimator, "threshold": repr(float(self.threshold)),
                "grid_h": str(int(self.grid[0])), "grid_w": str(int(self.grid[1])),
                "image_h": str(int(self.image_size[0])), "image_w": str(int(self.image_size[1])),
                "sigma": repr(float(self.sigma)), "encoder_hash": self.encoder_hash,
                "profile": json.dumps(self.info, sort_keys=True, default=_jsonable)}
        if self.image_score != "max":  # the C++ reader scores by it (careg_score)
            meta[IMAGE_SCORE_KEY] = self.image_score
        return meta

    def save(self, path) -> Path:
        """Atomic, checksummed write; returns the path."""
        path = Path(path)
        self.validate(str(path))  # never write a profile the reader would refuse
        write_container(path, self.tensors, self.metadata(), KIND, VERSION)
        self.path = str(path)
        return path

    # ---- threshold ------------------------------------------------------------------
    def set_threshold(self, value: float, provenance: dict) -> dict:
        """Change the threshold, appending a record to info["threshold_history"].

        `provenance` says where the value came from: method, target_fpr, n_images,
        source (folder, glob, camera or "explicit") and anything else worth keeping.
        The enrollment calibration (info["calibration"]) is left as it was, so the
        history plus the calibration tell every threshold this profile ever had.
        Returns the record. Nothing is written: call save()."""
        value = check_threshold(value, "threshold")
        from .version import __version__
        record = {"threshold": value, "previous": float(self.threshold), **provenance,
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds")
                  .replace("+00:00", "Z"), "careg_edge": __version__}
        self.info.setdefault(HISTORY_KEY, []).append(record)
        self.threshold = value
        return record

    @property
    def threshold_history(self) -> List[dict]:
        """Every threshold change since enrollment, oldest first ([] when none)."""
        return list(self.info.get(HISTORY_KEY, []))

    @property
    def nbytes(self) -> int:
        """Bytes of estimator state (what the scorer keeps in memory)."""
        return int(sum(a.nbytes for a in self.tensors.values()))

    # ---- reading -------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "Profile":
        tensors, meta = read_container(path, KIND, VERSION)
        return cls._from_parts(tensors, meta, str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, where: str = "<bytes>") -> "Profile":
        tensors, meta = parse_container(raw, where, KIND, VERSION)
        return cls._from_parts(tensors, meta, where)

    @classmethod
    def _from_parts(cls, tensors, meta, where) -> "Profile":
        missing = [k for k in FLAT_KEYS if k not in meta]
        if missing:
            raise BadHeader(f"{where}: profile metadata lacks {', '.join(missing)}; re-enroll")
        try:
            grid = (int(meta["grid_h"]), int(meta["grid_w"]))
            image = (int(meta["image_h"]), int(meta["image_w"]))
            threshold, sigma = float(meta["threshold"]), float(meta["sigma"])
        except ValueError:
            raise BadHeader(f"{where}: profile metadata has a non-numeric size/threshold") from None
        prof = cls(meta["estimator"], tensors, threshold, grid, image, sigma,
                   meta["encoder_hash"], metadata_json(meta, "profile", where), where)
        flat = meta.get(IMAGE_SCORE_KEY)
        if flat is not None:
            _check_image_score(flat, where)
        if flat is not None and flat != prof.image_score:
            raise BadHeader(f"{where}: metadata {IMAGE_SCORE_KEY!r} is {flat!r} but the profile "
                            f"JSON says {prof.image_score!r}; re-enroll")
        prof.validate(where)
        return prof

    def validate(self, where: str) -> None:
        """Every tensor the scorer will index has the shape the metadata implies (the
        estimator's class names its tensors and checks their shapes)."""
        if self.estimator not in ESTIMATORS:
            raise BadHeader(f"{where}: unknown estimator {self.estimator!r} "
                            f"(this careg-edge knows {', '.join(ESTIMATORS)})")
        if min(self.grid + self.image_size) <= 0 or not np.isfinite(self.threshold) \
                or not (self.sigma >= 0):
            raise BadHeader(f"{where}: profile sizes/threshold/sigma out of range")
        _check_image_score(self.image_score, where)
        est = estimator_class(self.estimator)
        for name, dtypes in est.profile_tensors.items():
            a = self.tensors.get(name)
            if a is None:
                raise BadHeader(f"{where}: {self.estimator} profile lacks tensor {name!r}")
            if a.dtype.str not in dtypes and np.dtype(a.dtype).newbyteorder("<").str not in dtypes:
                raise BadHeader(f"{where}: tensor {name!r} has dtype {a.dtype}, "
                                f"expected {' or '.join(dtypes)}")
        bad = est.check_shapes(self.tensors, self.grid[0] * self.grid[1])
        if bad is not None:
            raise BadHeader(f"{where}: inconsistent profile: {bad}")
        _check_channel_index(self.tensors.get("channel_index"), where)

    def check_encoder(self, encoder_hash: str, backbone: str = "") -> None:
        """Refuse to score with an encoder other than the one the profile was made with."""
        if encoder_hash != self.encoder_hash:
            enrolled = self.info.get("encoder", {}).get("backbone", "?")
            raise EncoderMismatch(
                f"{self.path or 'profile'}: enrolled with encoder {self.encoder_hash[:12]} "
                f"({enrolled}) but the loaded encoder is {encoder_hash[:12]} ({backbone or '?'}); "
                "load the same model or re-enroll")


def check_threshold(value, what: str) -> float:
    """A usable threshold: a finite number above 0 (scores are distances)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"{what} {value!r}: not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise UserInputError(f"{what} {value}: must be a finite number above 0")
    return v


def _check_image_score(rule, where: str) -> None:
    """max | mean | top<P>% with 0 < P <= 100 -- the rules both readers know."""
    top = _TOP_RULE.fullmatch(rule) if isinstance(rule, str) else None
    if rule in ("max", "mean") or (top and 0 < float(top.group(1)) <= 100):
        return
    raise BadHeader(f"{where}: metadata {IMAGE_SCORE_KEY!r} is {rule!r}, expected max, mean or "
                    "top<P>% with 0 < P <= 100; re-enroll")


def _check_channel_index(ci, where: str) -> None:
    if ci is not None and (ci.ndim != 1 or ci.dtype != np.int64 or (ci.size and ci.min() < 0)):
        raise BadHeader(f"{where}: inconsistent profile: channel_index must be a 1-D "
                        "non-negative int64 tensor")


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
