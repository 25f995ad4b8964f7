"""The demo's line check: what the enrolled threshold does on good parts it never saw,
and what re-calibration from production good parts changes.

Four bundled good test images cannot show a 1 % false-alarm rate, and an image AUROC
over them says little about where unseen good parts score. So the demo draws fresh
good flanges with the generator the bundled ones came from (careg_edge.synth_parts,
seeds far from the bundled ones): the first half plays "production good parts" and
re-calibrates the threshold (`careg-edge calibrate`'s rule), the second half measures
false alarms, before and after.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

SEED0 = 900_000      # bundled flanges use seeds 2024 + 1000 k + i: far below
N_CALIBRATE = 60     # production good parts that re-set the threshold
N_MEASURE = 60       # other fresh good parts that measure false alarms


@dataclass
class LineCheck:
    target_fpr: float
    enrolled: float            # the enrollment threshold
    recalibrated: float        # threshold after re-calibration on N_CALIBRATE good parts
    method: str                # threshold_from_good's method
    good_scores: List[float]   # the N_MEASURE fresh good parts
    defect_scores: List[float]  # the bundled test defects
    bundled_good: List[float]   # the bundled good test images

    def counts(self, thr: float):
        """(defects caught, bundled-good alarms, fresh-good alarms) at threshold thr."""
        return (sum(s > thr for s in self.defect_scores), sum(s > thr for s in self.bundled_good),
                sum(s > thr for s in self.good_scores))

    def best_at_target(self) -> int:
        """Defects above the highest threshold that keeps false alarms over all good
        parts seen here (bundled + fresh) within the target: the ROC's point."""
        good = np.sort(np.r_[self.good_scores, self.bundled_good])[::-1]
        allowed = int(np.floor(self.target_fpr * good.size))
        thr = good[allowed] if allowed < good.size else -np.inf
        return int(sum(s > thr for s in self.defect_scores))


def fresh_good_parts(n: int, start: int, size: int) -> List[np.ndarray]:
    from .synth_parts import make_part
    return [make_part(SEED0 + start + i, size)[0] for i in range(n)]


def line_check(insp, profile, rows, size: int) -> LineCheck:
    """Score fresh good parts, re-calibrate the profile's threshold on half of them
    (`careg-edge calibrate`'s rule, recorded in its history), measure the other half."""
    from .recalibrate import from_scores
    target = float(profile.info.get("calibration", {}).get("target_fpr", 0.01))
    calib = [r.score for r in insp.inspect_batch(fresh_good_parts(N_CALIBRATE, 0, size), profile)]
    measure = [r.score for r in insp.inspect_batch(
        fresh_good_parts(N_MEASURE, N_CALIBRATE, size), profile)]
    enrolled = float(profile.threshold)
    change = from_scores(profile, calib, target, f"demo: {N_CALIBRATE} freshly drawn good flanges")
    return LineCheck(target, enrolled, float(profile.threshold), change.fit["method"],
                     [float(s) for s in measure],
                     [r.score for r in rows if r.kind != "good"],
                     [r.score for r in rows if r.kind == "good"])


def line_lines(c: LineCheck) -> List[str]:
    n_def, n_b, n_f = len(c.defect_scores), len(c.bundled_good), len(c.good_scores)
    out = []
    for name, thr in (("enrollment threshold", c.enrolled),
                      (f"re-calibrated on {N_CALIBRATE} fresh good parts ({c.method})",
                       c.recalibrated)):
        caught, ab, af = c.counts(thr)
        out.append(f"{name} {thr:.4g}: defects caught {caught}/{n_def}; false alarms "
                   f"{ab}/{n_b} bundled + {af}/{n_f} fresh good parts")
    out.append(f"best possible at {c.target_fpr:.0%} false alarms (ROC over {n_b + n_f} good "
               f"parts): {c.best_at_target()}/{n_def} defects")
    return out
