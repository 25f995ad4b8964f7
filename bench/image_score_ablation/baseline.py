"""Per-position baseline image scores (BASELINE_RULE.md): enroll the eval protocol's
support sets with shipped defaults, keep every leave-one-out (LOO) map enrollment
computes for its threshold, score the test set through the compiled road, and compare
image scores taken on M, M - B and M / B (B = mean LOO map) by image AUROC.

    python bench/image_score_ablation/baseline.py ../shared/data/magnetic_tile_defects \
        magnetic_tile runs/line_magnetic_tile/support_sets/magnetic_tile.json \
        --shots 2,8 --rounds 3 -o runs/baseline_mt.npz
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from careg_edge import Inspector, _core, imageio, preprocess, scoring
from careg_edge.enrollment import Enrollment, EnrollSettings
from careg_edge.lab.datasets import load_category
from careg_edge.lab.image_passes import memoise_encoder
from careg_edge.lab.metrics import auroc
from careg_edge.pipeline import single_thread_blas


class MapKeepingEnrollment(Enrollment):
    """Enrollment that also keeps the LOO maps of the held-out probes (not the
    synthetic-defect ones): the same scorer calls, asked for maps too."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.loo_maps, self._synthetic = [], False
        self.synth_maps: list = []   # (index into loo_maps of the unit, maps [n, H, W])

    def _scores(self, feats, thetas, state):
        sc = scoring.scorer(self.est.name, state, self.est.params, self.spec.grid,
                            self.spec.input_size, self.s.sigma, self.s.image_score)
        th = np.ascontiguousarray(thetas, np.float32) if self.spec.mode == "registered" else None
        res = _core.score(sc, np.ascontiguousarray(feats, np.float32), th, self.insp.threads)
        maps = np.asarray(res["maps"], np.float32)
        if self._synthetic:
            self.synth_maps.append((len(self.loo_maps) - 1, maps))
        else:
            self.loo_maps.append(maps)
        return np.asarray(res["scores"])

    def _synthetic_scores(self, img, state, seed):
        self._synthetic = True
        try:
            return super()._synthetic_scores(img, state, seed)
        finally:
            self._synthetic = False


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


def standardise(rgb: np.ndarray, mode: str) -> np.ndarray:
    """PHOTOMETRIC_RULE.md: one image's intensities to a fixed mean and spread."""
    x = rgb.astype(np.float64)
    if mode == "global":
        x = (x - x.mean()) / max(x.std(), 1e-6) * IMAGENET_STD.mean() + IMAGENET_MEAN.mean()
    else:
        m, s = x.mean((0, 1)), np.maximum(x.std((0, 1)), 1e-6)
        x = (x - m) / s * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def use_photometric(mode: str) -> None:
    """Every encoder input (support, its augmented views, test images) standardised
    first: the one function they all pass through is preprocess.normalise."""
    inner = preprocess.normalise
    preprocess.normalise = lambda rgbs, meta: inner([standardise(r, mode) for r in rgbs], meta)


def top(flat: np.ndarray, frac: float) -> np.ndarray:
    n = max(1, int(round(flat.shape[1] * frac)))
    return np.sort(flat, 1)[:, -n:].mean(1)


def candidates(maps: np.ndarray, base: np.ndarray) -> dict:
    flat, b = maps.reshape(len(maps), -1), base.reshape(1, -1)
    return {"top20%": top(flat, 0.2), "top20%(M-B)": top(flat - b, 0.2),
            "max(M-B)": (flat - b).max(1), "top20%(M/B)": top(flat / np.maximum(b, 1e-6), 0.2)}


def auroc_or_half(neg: np.ndarray, pos: np.ndarray) -> float:
    """AUROC of pos above neg, ties counted half (no library: a handful of scores)."""
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def choose_auto(loo_maps, synth_maps) -> tuple:
    """AUTO_RULE.md: top20% of M or of M - B_-u, whichever separates the synthetic
    defects from the held-out good images better (tie: top20%)."""
    loo = [m[0] for m in loo_maps]
    def base_without(u):
        others = [m for i, m in enumerate(loo) if i != u]
        return np.mean(others, 0) if others else np.zeros_like(loo[u])
    flat = lambda m: m.reshape(len(m), -1)
    good = {"top20%": [], "base": []}
    fake = {"top20%": [], "base": []}
    for u, m in enumerate(loo):
        b = base_without(u).reshape(1, -1)
        good["top20%"].append(top(flat(m[None]), 0.2)); good["base"].append(top(flat(m[None]) - b, 0.2))
    for u, maps in synth_maps:
        b = base_without(u).reshape(1, -1)
        fake["top20%"].append(top(flat(maps), 0.2)); fake["base"].append(top(flat(maps) - b, 0.2))
    sep = {n: auroc_or_half(np.concatenate(good[n]), np.concatenate(fake[n])) for n in good}
    return ("top20%(M-B)" if sep["base"] > sep["top20%"] else "top20%"), sep


def test_maps(insp, profile, cat, size):
    road = scoring.road(profile)
    maps, scores = [], []
    for item in cat.test:
        rgb = preprocess.resize(imageio.read_image(item.path), size)
        out = insp.runtime.infer(preprocess.encoder_input([rgb], insp.meta))
        res = scoring.inspect(road, out, float(profile.threshold), None, insp.threads)
        maps.append(np.asarray(res["maps"][0], np.float32))
        scores.append(float(res["scores"][0]))
    return np.stack(maps), np.array(scores)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("category")
    ap.add_argument("support_sets")
    ap.add_argument("--shots", default="2,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--auto", action="store_true", help="AUTO_RULE.md: add the per-enrollment choice")
    ap.add_argument("--photometric", choices=("none", "global", "channel"), default="none")
    a = ap.parse_args(argv)
    if a.photometric != "none":
        use_photometric(a.photometric)
    cat = load_category(Path(a.data), a.category)
    sets = json.loads(Path(a.support_sets).read_text())["sets"]
    train = {p.name: p for p in cat.train}
    y = np.array([t.label for t in cat.test])
    insp = Inspector(None, "onnxruntime", 2)
    memo = memoise_encoder(insp)
    memo.max_bytes = 4e9
    size = tuple(insp.meta.input_size)
    saved, rows = {}, []
    for k in (int(s) for s in a.shots.split(",")):
        for rnd in range(a.rounds):
            t0 = time.time()
            support = [imageio.read_image(train[n]) for n in sets[f"{k}/{rnd}"]]
            st = EnrollSettings(prior_exclude=(a.category,))
            with single_thread_blas():
                en = MapKeepingEnrollment(insp, st)
                prof = en.run(support)
            base = np.concatenate(en.loo_maps).mean(0)
            maps, product = test_maps(insp, prof, cat, size)
            cand = candidates(maps, base)
            if a.auto:
                pick, sep = choose_auto(en.loo_maps, en.synth_maps)
                cand["auto"] = cand[pick]
                print(f"  auto: {pick} (synthetic AUROC top20% {sep['top20%']:.3f}, "
                      f"M-B {sep['base']:.3f})", flush=True)
            assert np.allclose(cand["top20%"], product, rtol=1e-4), "top20% differs from the road"
            res = {n: 100 * auroc(y, s) for n, s in cand.items()}
            rows.append((k, rnd, res))
            print(f"K={k} r={rnd} " + " ".join(f"{n} {v:.2f}" for n, v in res.items())
                  + f"  ({time.time() - t0:.0f} s)", flush=True)
            half = lambda m: m.reshape(m.shape[0], m.shape[1] // 2, 2, m.shape[2] // 2, 2).mean((2, 4))
            saved[f"loo_{k}_{rnd}"] = half(np.concatenate(en.loo_maps)).astype(np.float16)
            saved[f"test_{k}_{rnd}"] = half(maps).astype(np.float16)
    np.savez(a.output, y=y, types=np.array([t.defect_type for t in cat.test]), **saved)
    names = list(rows[0][2])
    print("| K | " + " | ".join(names) + " |")
    for k in sorted({r[0] for r in rows}):
        rs = [r[2] for r in rows if r[0] == k]
        print(f"| {k} | " + " | ".join(f"{np.mean([r[n] for r in rs]):.2f}" for n in names) + " |")


if __name__ == "__main__":
    main()
