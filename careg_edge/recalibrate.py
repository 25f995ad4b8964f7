"""Re-setting a profile's threshold after enrollment, without re-fitting the estimator.

Enrollment sees K good images; the line sees thousands. Scoring more good images
with the enrolled estimator and reading the threshold off their scores
(calibration/threshold.py: `threshold_from_good`) replaces an extrapolated tail by
a measured one. Three ways in, one record each in the profile's history
(Profile.set_threshold):

* `careg-edge calibrate --good DIR|GLOB`: a folder of good images (`from_scores`);
* `careg-edge calibrate --threshold X`: a value someone chose (`explicit`);
* `careg-edge run --learn N`: the first N frames of a source, presumed good but
  possibly holding a few defects, hence the robust rule (`Learner`).

The how and why for operators: docs/recalibration.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import CaregError, UserInputError
from .profile import Profile, check_threshold


class LearningIncomplete(UserInputError):
    """`run --learn N` ended without fixing a threshold (source ended, camera lost, too few)."""


@dataclass
class Change:
    """One threshold change and how the good images it came from see both thresholds."""

    record: dict                       # the history record Profile.set_threshold appended
    fit: Optional[dict] = None         # threshold_from_good's answer; None when explicit
    old_flagged: Optional[float] = None  # fraction of the good images over the old threshold
    new_flagged: Optional[float] = None  # ... over the new one (their false-alarm rate)
    rejected: Tuple[int, ...] = ()     # indices (into the scores) the robust rule dropped


def from_scores(profile: Profile, scores, target_fpr: float, source: str, robust: bool = False,
                what: Optional[str] = None) -> Change:
    """Threshold at `target_fpr` from image scores of good images; appended to the history.
    Raises NotEnoughGood (naming how many are needed) before anything changes."""
    from .calibration.threshold import threshold_from_good

    s = np.asarray(scores, np.float64).ravel()
    fit = threshold_from_good(s, target_fpr, robust=robust, what=what or source)
    # The robust rule only ever drops the highest scores, so the kept good images
    # are the lowest n_used: both rates below are measured on those.
    order = np.argsort(s, kind="stable")
    kept, rejected = s[order[:int(fit["n_used"])]], sorted(order[int(fit["n_used"]):].tolist())
    old = float(profile.threshold)
    provenance = {"method": fit["method"], "target_fpr": float(fit["target_fpr"]),
                  "n_images": int(s.size), "source": source}
    if robust:
        provenance["n_rejected"] = int(fit["n_rejected"])
    record = profile.set_threshold(fit["threshold"], provenance)
    return Change(record, fit, float((kept > old).mean()),
                  float((kept > record["threshold"]).mean()), tuple(rejected))


def explicit(profile: Profile, value, what: str = "--threshold") -> Change:
    """A threshold someone chose (e.g. from `careg-edge eval`): no images, still recorded."""
    v = check_threshold(value, what)
    record = profile.set_threshold(v, {"method": "explicit", "target_fpr": None,
                                       "n_images": 0, "source": "explicit"})
    return Change(record)


def _rate(a) -> str:
    return "?" if a is None else f"{float(a):.1%}"


def report_lines(change: Change, name: str, labels: Optional[Sequence] = None) -> List[str]:
    """Before/after for people: threshold, method, images, false alarms of old and new.
    `labels[i]` names the i-th scored image (frame ids for --learn) when one was rejected."""
    r = change.record
    head = f"{name}: threshold {r['previous']:.6g} -> {r['threshold']:.6g} ({r['method']}"
    if r.get("target_fpr") is not None:
        head += f", target {_rate(r['target_fpr'])} false alarms"
    lines = [head + ")"]
    if change.fit is None:
        return lines
    kind = "presumed-good frames" if "n_rejected" in r else "good images"
    used = f"{r['n_images']} {kind} from {r['source']}"
    if change.rejected:
        names = [str(labels[i] if labels is not None else i) for i in change.rejected[:8]]
        more = " ..." if len(change.rejected) > 8 else ""
        what = ("frame" if labels else "item") + ("s" if len(names) > 1 else "")
        used += (f"; {len(change.rejected)} rejected as outliers ({what} {', '.join(names)}{more}), "
                 f"{change.fit['n_used']} used")
    lines.append(f"  {used}")
    lines.append(f"  on these good images the old threshold flagged {_rate(change.old_flagged)}, "
                 f"the new one flags {_rate(change.new_flagged)}")
    return lines


def history_lines(profile: Profile) -> List[str]:
    """The enrollment threshold, then every change: one line each, oldest first."""
    cal = profile.info.get("calibration") or {}
    lines = []
    if cal.get("threshold") is not None:
        method = (cal.get("model") or {}).get("method", "leave-one-out")
        lines.append(f"  enrollment            {float(cal['threshold']):.6g} ({method}, target "
                     f"{_rate(cal.get('target_fpr'))} false alarms)")
    for r in profile.threshold_history:
        target = "" if r.get("target_fpr") is None else f", target {_rate(r['target_fpr'])}"
        images = f", {r['n_images']} images" if r.get("n_images") else ""
        source = "" if r.get("source") == r["method"] else f"; {r['source']}"
        lines.append(f"  {r.get('time', '?'):<21} {r['previous']:.6g} -> {r['threshold']:.6g} "
                     f"({r['method']}{target}{images}{source})")
    return lines or ["  (no threshold recorded)"]


class Learner:
    """`run --learn N`: the first N readable frames are presumed good; their scores,
    after the robust rule drops a few defective ones, fix each profile's threshold."""

    def __init__(self, n: int, target_fpr: float, source: str):
        from .calibration.threshold import check_target, needed_images

        self.target_fpr = check_target(target_fpr)
        need = needed_images(self.target_fpr)
        if n < need:
            raise UserInputError(f"--learn {n}: a threshold at {self.target_fpr:.1%} false alarms "
                                 f"needs at least {need} presumed-good frames; use --learn {need} "
                                 "or more")
        self.n, self.need, self.source = int(n), need, source
        self.scores: Dict[str, List[float]] = {}
        self.frames: List[int] = []
        self.active = True
        self.problem: Optional[str] = None   # why no threshold was fixed, for the exit status

    @property
    def remaining(self) -> int:
        return self.n - len(self.frames)

    def add(self, frame_id: int, results: Dict[str, object]) -> None:
        self.frames.append(frame_id)
        for name, r in results.items():
            self.scores.setdefault(name, []).append(float(r.score))

    def finish(self, profiles: Dict[str, Profile], log) -> None:
        """Fix, write (atomically, in place) and reload every profile; inspection then goes
        on with the reloaded ones, so what is scored is exactly what is on disk."""
        self.active = False
        for name, profile in list(profiles.items()):
            try:
                change = from_scores(profile, self.scores.get(name, []), self.target_fpr,
                                     self.source, robust=True,
                                     what=f"--learn {self.n} ({self.source}, {name})")
            except CaregError as e:  # too few frames left after the robust rule
                self._fail(str(e), name, log)
                continue
            try:
                profile.save(profile.path)
            except (CaregError, OSError) as e:  # read-only file system, disk full
                profile.threshold = change.record["previous"]  # go on as before, as said
                profile.info["threshold_history"].pop()
                self._fail(f"{profile.path}: cannot write ({getattr(e, 'strerror', None) or e})",
                           name, log)
                continue
            profiles[name] = Profile.load(profile.path)
            for line in report_lines(change, f"learned {name}", labels=self.frames):
                log(line)

    def _fail(self, why: str, name: str, log) -> None:
        self.problem = f"{why}; threshold not changed"
        log(f"learning: {name}: {self.problem}")

    def stop_early(self, profiles: Dict[str, Profile], why: str, log) -> None:
        """The source ended or was lost before N frames: fix only from enough of them."""
        got = len(self.frames)
        if got >= self.need and why != "interrupted":
            log(f"learning: {why} after {got} of {self.n} frames; fixing the threshold "
                f"from those {got}")
            self.finish(profiles, log)
            return
        self.active = False
        self.problem = (f"--learn {self.n}: {why} after {got} presumed-good frame(s) of {self.n}; "
                        + ("threshold not changed" if why == "interrupted" else
                           f"at least {self.need} are needed, threshold not changed"))
        log(f"learning: {self.problem}")
