"""Thresholds from good images only: the tail model, the cross-category prior, the
line re-calibration rule. References: scipy.stats for the quantiles, simulation for
the false-alarm rates the rules promise."""
import math

import numpy as np
import pytest

from careg_edge.calibration.tail_prior import TailPrior
from careg_edge.calibration.threshold import (NotEnoughGood, loo_threshold, normal_quantile,
                                              robust_keep, t_quantile, threshold_for,
                                              threshold_from_good)
from careg_edge.errors import FormatError, UserInputError

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 10, 30, math.inf])
@pytest.mark.parametrize("p", [0.9, 0.95, 0.99, 0.999])
def test_t_quantile_matches_scipy(dof, p):
    ref = stats.norm.ppf(p) if math.isinf(dof) else stats.t.ppf(p, dof)
    assert t_quantile(p, dof) == pytest.approx(ref, rel=5e-3)


def test_normal_quantile_matches_scipy():
    for p in (1e-6, 0.01, 0.3, 0.5, 0.77, 0.99, 1 - 1e-6):
        assert normal_quantile(p) == pytest.approx(stats.norm.ppf(p), abs=1e-7)


def test_many_good_images_use_the_empirical_quantile():
    rng = np.random.default_rng(0)
    good = rng.lognormal(3, 0.2, 2000)
    r = threshold_from_good(good, 0.01)
    assert r["method"] == "empirical" and r["threshold"] in good
    assert r["threshold"] == np.quantile(good, 0.99, method="higher")
    fresh = rng.lognormal(3, 0.2, 200_000)
    assert 0.005 < (fresh > r["threshold"]).mean() < 0.02


def test_few_good_images_use_a_predictive_tail_that_keeps_its_rate():
    # log-normal goods: the Student-t predictive quantile is exact in expectation,
    # and never going below the observed max only makes it safer.
    rng = np.random.default_rng(1)
    fprs = []
    for _ in range(300):
        good = rng.lognormal(2, 0.3, 30)
        r = threshold_from_good(good, 0.01)
        assert r["method"] == "lognormal-tail" and r["threshold"] >= good.max()
        z = (math.log(r["threshold"]) - 2) / 0.3
        fprs.append(stats.norm.sf(z))
    assert 0.004 < np.mean(fprs) < 0.012


def test_too_few_good_images_say_how_many_are_needed():
    with pytest.raises(NotEnoughGood, match="at least 20"):
        threshold_from_good(np.ones(12), 0.01)
    with pytest.raises(UserInputError, match="not finite"):
        threshold_from_good([1.0] * 25 + [float("nan")], 0.05)
    with pytest.raises(UserInputError, match="must be in"):
        threshold_from_good(np.ones(50), 0.0)


def test_robust_rule_drops_a_few_defects_among_presumed_good():
    rng = np.random.default_rng(2)
    good = rng.lognormal(3, 0.1, 200)
    mixed = np.concatenate([good, good.max() * np.array([1.6, 2.0, 3.0])])
    keep = robust_keep(mixed)
    assert keep[:200].all() and not keep[200:].any()
    a = threshold_from_good(good, 0.05, robust=True)
    b = threshold_from_good(mixed, 0.05, robust=True)
    assert b["n_rejected"] == 3 and a["threshold"] == b["threshold"]
    # 30 % "outliers" is not a few defects: at most 20 % is ever rejected.
    assert (~robust_keep(np.r_[good[:70], good[:30] * 5])).sum() == 20


def _world(rng, n_cat, k, rounds=4, bias=0.15, sigma=0.12, n_unseen=400):
    """Categories whose unseen good log-scores sit `bias` above the LOO ones."""
    recs, loo, unseen = [], [], []
    for c in range(n_cat):
        mu = rng.normal(3.5, 0.3)
        for r in range(rounds):
            recs.append({"category": f"c{c}", "k": k, "round": r, "estimator": "patchcore",
                         "image_score": "top20%"})
            loo.append(rng.normal(mu - bias, sigma, max(k, 6)))
            unseen.append(rng.normal(mu, sigma, n_unseen))
    return recs, loo, unseen


def test_prior_learns_the_bias_and_transfers_to_an_unseen_category(tmp_path):
    rng = np.random.default_rng(3)
    recs, loo, unseen = _world(rng, 8, 4)
    path = tmp_path / "prior.careg"
    TailPrior.save(path, recs, loo, unseen)
    prior = TailPrior.load(path)
    p = prior.params(4, 0.05)
    assert p["bias"] == pytest.approx(0.15, abs=0.03)
    assert p["sigma0"] == pytest.approx(0.12, abs=0.02)
    # A new category from the same world: the rate is what was asked, on average.
    fprs = []
    for _ in range(400):
        mu = rng.normal(3.5, 0.3)
        r = loo_threshold(np.exp(rng.normal(mu - 0.15, 0.12, 4)), 4, 0.05, prior)
        fprs.append(stats.norm.sf((math.log(r["threshold"]) - mu) / 0.12))
    assert 0.03 < np.mean(fprs) < 0.08


def test_prior_excludes_the_named_category(tmp_path):
    rng = np.random.default_rng(4)
    recs, loo, unseen = _world(rng, 3, 2)
    for i, r in enumerate(recs):
        if r["category"] == "c0":  # category c0 is wildly different
            unseen[i] = unseen[i] + 5.0
    path = tmp_path / "prior.careg"
    TailPrior.save(path, recs, loo, unseen)
    full, ex = TailPrior.load(path), TailPrior.load(path, exclude=["c0"])
    assert ex.categories(2) == ["c1", "c2"] and full.categories(2) == ["c0", "c1", "c2"]
    assert ex.params(2, 0.01)["bias"] < full.params(2, 0.01)["bias"] - 1.0


def test_prior_file_is_checked(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "prior.careg"
    TailPrior.save(path, *_world(rng, 2, 1))
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError):
        TailPrior.load(path)


def test_stored_calibration_rederives_thresholds(tmp_path):
    rng = np.random.default_rng(6)
    path = tmp_path / "prior.careg"
    TailPrior.save(path, *_world(rng, 4, 2))
    prior = TailPrior.load(path)
    loo = np.exp(rng.normal(3, 0.1, 2))
    cal = loo_threshold(loo, 2, 0.01, prior)
    cal["loo_scores"] = loo.tolist()
    assert threshold_for(cal, 0.01, prior) == pytest.approx(cal["threshold"])
    assert threshold_for(cal, 0.05, prior) < cal["threshold"]
    line = threshold_from_good(np.exp(rng.normal(3, 0.1, 300)), 0.01)
    assert threshold_for(line, 0.01) == pytest.approx(line["threshold"], rel=1e-6)  # stored to 6 digits


def test_k1_spread_comes_from_the_prior_not_from_views(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "prior.careg"
    TailPrior.save(path, *_world(rng, 4, 1))
    prior = TailPrior.load(path)
    tight = loo_threshold(np.full(6, 20.0) * (1 + 1e-3 * np.arange(6)), 1, 0.01, prior)
    wide = loo_threshold(np.full(6, 20.0) * (1 + 1e-1 * np.arange(6)), 1, 0.01, prior)
    # the views' own spread does not widen the K = 1 threshold, only their level moves it
    ratio = wide["threshold"] / tight["threshold"]
    level = math.exp(np.log(1 + 1e-1 * np.arange(6)).mean() - np.log(1 + 1e-3 * np.arange(6)).mean())
    assert ratio == pytest.approx(level, rel=1e-9)


def test_default_prior_falls_back_to_the_nearest_recorded_setting(tmp_path, monkeypatch):
    import careg_edge.calibration.tail_prior as tp
    rng = np.random.default_rng(8)
    recs, loo, unseen = _world(rng, 2, 2)
    for r in recs[:4]:
        r["estimator"] = "padim"
    path = tmp_path / "tail_prior.careg"
    TailPrior.save(path, recs, loo, unseen)
    monkeypatch.setattr(tp, "DEFAULT_PATH", path)
    tp._load_cached.cache_clear()
    try:
        assert len(TailPrior.default("padim", "top20%").records) == 4
        assert len(TailPrior.default("orthoad", "top20%").records) == 4     # PaDiM's Gaussian
        assert len(TailPrior.default("patchcore", "top20%").records) == len(recs) - 4
        assert len(TailPrior.default("padim", "max").records) == len(recs) - 4  # the default's
    finally:
        tp._load_cached.cache_clear()


def test_shipped_prior_covers_every_k_and_leaves_out_any_category():
    from careg_edge.calibration.tail_prior import DEFAULT_PATH
    if not DEFAULT_PATH.exists():
        pytest.skip(f"{DEFAULT_PATH} not shipped in this checkout")
    for est in ("patchcore", "padim"):
        full = TailPrior.default(est, "top20%")
        assert full.records and all(r["estimator"] == est for r in full.records)
        for cat in ("metal_plate", "magnetic_tile", "juice_bottle"):
            ex = TailPrior.default(est, "top20%", exclude=[cat])
            for k in (1, 2, 4, 8):
                assert cat in full.categories(k) and cat not in ex.categories(k)
                p1, p5 = ex.params(k, 0.01), ex.params(k, 0.05)
                assert math.isfinite(p1["q"]) and p1["sigma0"] > 0
                assert p1["q"] * p1["sigma0"] > p5["q"] * p5["sigma0"]  # 1 % sits above 5 %


def test_prior_reports_the_spread_of_single_enrollments(tmp_path):
    """fpr_spread: median, 90th percentile and worst of each training record's false-alarm rate at the fitted
    threshold rule, recomputed here from the records with NumPy."""
    rng = np.random.default_rng(5)
    recs, loo, unseen = _world(rng, 6, 4)
    path = tmp_path / "prior.careg"
    TailPrior.save(path, recs, loo, unseen)
    prior = TailPrior.load(path)
    p = prior.params(4, 0.05)
    rates = []
    for x, u in zip(prior.loo, prior.unseen):
        n = x.size
        s2 = x.var(ddof=1)
        sig = math.sqrt((p["nu0"] * p["sigma0"] ** 2 + (n - 1) * s2) / (p["nu0"] + n - 1))
        log_thr = x.mean() + p["bias"] + p["q"] * sig * math.sqrt(1 + 1 / n)
        rates.append((u > log_thr).mean())
    got = p["fpr_spread"]
    want = list(np.percentile(rates, [50, 90])) + [max(rates)]
    assert [got["p50"], got["p90"], got["max"]] == pytest.approx(want, abs=1e-9)
    assert got["n"] == len(recs)
    assert got["p50"] <= np.mean(rates) <= got["max"]
