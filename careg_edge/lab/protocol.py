"""The few-shot evaluation protocol (RegAD / CAReg papers), run through the public API,
plus the line metrics: false alarms and detection at calibrated thresholds.

For each category, shot count K and round r a support set of K file names is drawn
once from `train/good` by a seeded generator and saved as JSON, so every run,
estimator and backbone sees the same sets (datasets.py). A profile is enrolled from
the support images only (its threshold is calibrated from good images only; the
calibration prior leaves the evaluated category out); only then is any file under
`test/` opened. Test images are scored as they come: scores and maps are used raw,
never normalised across the test set.

Paper metrics (image/pixel AUROC, PRO, F1-max) use the test set. Line metrics use
every good image the profile has not seen (train/good minus the support, test/good,
validation/good) against the defective test images, at each requested false-alarm
target, the threshold re-derived from the one enrollment's stored calibration
(line_metrics.py). The re-calibration arm (`recalibrate` = N) re-sets each threshold from
N of the unseen goods, as `careg-edge calibrate --good` would, and measures on the rest.

Each image is read and encoded once per pass over a category (image_passes.py);
each finished (category, estimator, K, round) is cached on disk (round_cache.py), so
an interrupted run resumes where it stopped and another target is re-derived from
the cached scores. The re-calibration arm is not cached: it is computed from the
stored scores on every run, so any N works on any finished output folder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from ..errors import FormatError
from ..progress import Progress
from .datasets import find_categories, load_category, support_sets
from .image_passes import run_category, work_units
from .line_metrics import (DEFAULT_RECALIBRATE, DEFAULT_TARGETS, default_threshold_for,
                           default_threshold_from_good, recalibration)
from .round_cache import cache_path, is_cached, load_round
from .round_result import RoundJob

LOCALISATION = {"feature-unwarp": "unwarp", "registered-frame": "registered"}


@dataclass
class EvalConfig:
    """One evaluated method: everything that changes a profile or a score."""

    estimator: str = "patchcore"
    model: Optional[str] = None
    backend: str = "auto"
    augment: str = "auto"
    localisation: str = "feature-unwarp"
    seed: int = 0
    enroll_options: Dict[str, object] = field(default_factory=dict)
    # enroll with prior_exclude=(category,): a calibration prior learned across
    # categories must not have seen the one being evaluated
    exclude_own_category: bool = True

    def key(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def label(self) -> str:
        """Method name in tables: the estimator, plus whatever differs from the defaults."""
        parts = [self.estimator]
        if self.localisation != "feature-unwarp":
            parts.append(self.localisation)
        if self.augment != "auto":
            parts.append(f"aug-{self.augment}")
        if self.enroll_options.get("image_score", "max") != "max":
            parts.append(f"score-{self.enroll_options['image_score']}")
        return "+".join(parts)

    def enroll_kwargs(self, category: str) -> Dict[str, object]:
        """Keyword arguments of Inspector.enroll for one category (recorded per round)."""
        opts = dict(self.enroll_options)
        opts["localisation"] = LOCALISATION[self.localisation]  # the pipeline's names
        # no image_score in a config means max, whatever the library's default is today
        # (the CLI puts every other rule in the config, so the method label names it)
        opts.setdefault("image_score", "max")
        kw = dict(estimator=self.estimator, augment=self.augment, seed=self.seed, **opts)
        if self.exclude_own_category:
            kw["prior_exclude"] = (category,)
        return kw


def default_inspector(cfg: EvalConfig):
    from ..pipeline import Inspector
    return Inspector(model=cfg.model, backend=cfg.backend)


def evaluate(data: Path, outdir: Path, configs: Sequence[EvalConfig], shots: Sequence[int],
             rounds: int, categories: Optional[Sequence[str]] = None, seed: int = 0,
             support_dir: Optional[Path] = None, make_inspector=default_inspector,
             progress: bool = True, max_map_bytes: float = 2e9,
             targets: Sequence[float] = DEFAULT_TARGETS,
             threshold_for: Callable = default_threshold_for,
             max_profile_bytes: float = 3e9, recalibrate: int = DEFAULT_RECALIBRATE,
             threshold_from_good: Callable = default_threshold_from_good) -> dict:
    """Run (or resume) the protocol; returns {"results": [...per-round results...], ...}.

    targets: false-alarm rates at which the line metrics are measured, each threshold
    re-derived by threshold_for(profile.info["calibration"], target) from one enrollment.
    max_map_bytes / max_profile_bytes: anomaly maps / enrolled profiles held at once
    (more = fewer passes over the test set / the other good images).
    recalibrate: N good images per round for the re-calibration arm (0: none), drawn
    from the round's unseen goods; threshold_from_good sets each target's threshold."""
    data, outdir = Path(data), Path(outdir)
    targets = sorted({float(t) for t in targets})
    cats = [load_category(data, c) for c in (categories or find_categories(data))]
    support_dir = Path(support_dir) if support_dir else outdir / "support_sets"
    plan = []
    for cat in cats:
        sets = support_sets(cat, shots, rounds, seed, support_dir)
        for cfg in configs:
            for k in shots:
                for r in range(rounds):
                    plan.append(RoundJob(cat.name, cfg, k, r, sets[f"{k}/{r}"],
                                         cache_path(outdir, cat.name, cfg, k, r)))
    todo = [j for j in plan if not is_cached(j.cache, j.support, targets, threshold_for)]
    bar = Progress(sum(work_units(c, j) for c in cats for j in todo if j.cat == c.name), "eval",
                   progress and bool(todo))
    inspectors: Dict[tuple, object] = {}
    with bar:
        for cat in cats:
            run_category(cat, [j for j in todo if j.cat == cat.name], inspectors, make_inspector,
                         bar, max_map_bytes, targets, threshold_for, max_profile_bytes)
    results = []
    for j in plan:
        got = load_round(j.cache)
        if got is None or got[0].get("support") != j.support:
            raise FormatError(f"{j.cache}: result missing after the run; delete it and run again")
        res, arrays = got
        res["line"] = [row for row in res["line"] if row["target_fpr"] in targets]
        if recalibrate:
            res["recalibration"] = recalibration(
                arrays["unseen_scores"], arrays["scores"][arrays["labels"] == 1], targets,
                recalibrate, seed, j.cat, j.k, j.rnd, threshold_from_good)
        res["cache"] = str(j.cache.relative_to(outdir))
        results.append(res)
    return {"data": str(data), "shots": list(shots), "rounds": rounds, "seed": seed,
            "targets": targets, "recalibrate": recalibrate, "support_dir": str(support_dir),
            "results": results}

