"""The one compiled road (careg_edge.scoring / _core.inspect) against the NumPy oracle
(tests/reference.road) over every estimator x image-score rule x localisation mode,
on synthetic images (a toy encoder with a real registration shift) and on real MPDD
images with the bundled encoder. The C API runs the same road: tests/test_core_capi.py.

Tolerance: scores agree to rtol 1e-4 (float32 core vs float64 oracle; the kNN winner
is recomputed exactly in both), verdicts exactly.
"""
import numpy as np
import pytest

from careg_edge import Inspector, Profile, _core, preprocess, scoring
from careg_edge.errors import CaregError
from careg_edge.features import assemble
from tests import reference as ref
from tests.conftest import shared_path
from tests.test_pipeline import ToyRuntime, _texture

ESTIMATORS = ["padim", "orthoad", "patchcore"]
RULES = ["max", "mean", "top20%", "top0.9375%"]
MODES = ["unwarp", "registered"]
RTOL = 1e-4


def with_rule(profile, rule):
    """The same fitted profile scored by another rule (the threshold is kept)."""
    info = dict(profile.info, image_score=rule)
    return Profile(profile.estimator, dict(profile.tensors), profile.threshold, profile.grid,
                   profile.image_size, profile.sigma, profile.encoder_hash, info)


@pytest.fixture(scope="module")
def toy():
    # a registration shift, so "registered" and "unwarp" give different features
    return Inspector(ToyRuntime(theta=np.array([[0.12, -0.08]] * 3, np.float32)))


@pytest.fixture(scope="module")
def toy_profiles(toy):
    support = [_texture(s) for s in range(4)]
    return {(e, m): toy.enroll(support, estimator=e, augment="none", d=12, localisation=m,
                               image_score="max")
            for e in ESTIMATORS for m in MODES}


def _batch():
    imgs = [_texture(20 + i) for i in range(4)]
    imgs[1][30:44, 10:24] = [250, 20, 20]
    imgs[3][5:12, 40:60] = [0, 0, 0]
    return imgs


def _outputs(insp, imgs, size):
    x = preprocess.normalise([preprocess.resize(i, size) for i in imgs], insp.meta)
    return insp.runtime.infer(x)


def check_parity(insp, prof, imgs, **overrides):
    results = insp.inspect_batch(imgs, prof, **overrides)
    want = ref.road(_outputs(insp, imgs, tuple(prof.image_size)), prof, **overrides)
    got = np.array([r.score for r in results])
    np.testing.assert_allclose(got, want["scores"], rtol=RTOL, atol=1e-6)
    assert [r.is_defect for r in results] == list(want["defect"])
    for r in results:
        assert r.reason and (">" in r.reason) == r.is_defect
    return got, want


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULES)
def test_python_road_matches_numpy_oracle_synthetic(toy, toy_profiles, estimator, mode, rule):
    prof = with_rule(toy_profiles[(estimator, mode)], rule)
    got, want = check_parity(toy, prof, _batch())
    assert got[1] > got[0]  # the pasted patch scores above its clean neighbour
    if rule != "max" or estimator != "patchcore":  # the map itself agrees too
        r = toy.inspect_batch(_batch()[:1], prof)[0]
        np.testing.assert_allclose(r.anomaly_map, want["maps"][0], rtol=1e-4, atol=1e-5 * want["maps"].max())


def test_modes_really_differ_and_theta_matters(toy, toy_profiles):
    a = toy.inspect(_batch()[1], toy_profiles[("padim", "unwarp")]).score
    b = toy.inspect(_batch()[1], toy_profiles[("padim", "registered")]).score
    assert abs(a - b) > 1e-3 * abs(a)


@pytest.mark.parametrize("mode", MODES)
def test_local_search_override_matches_oracle(toy, toy_profiles, mode):
    prof = with_rule(toy_profiles[("patchcore", mode)], "mean")  # every distance counts
    g, _ = check_parity(toy, prof, _batch(), search="local", radius=1)
    l0, _ = check_parity(toy, prof, _batch(), search="local", radius=0)
    assert not np.allclose(g, l0)  # the radius is really used


def test_patchcore_max_is_reweighted_not_map_max(toy, toy_profiles):
    prof = toy_profiles[("patchcore", "unwarp")]
    res = scoring.inspect(toy._prepared(prof, {}), _raw(toy, prof, 2), prof.threshold)
    for b in range(2):  # Eq. 7: weight in (0, 1) times the largest raw distance
        assert 0 < res["scores"][b] < res["dist"][b].max() * 0.999
        assert abs(res["scores"][b] - res["maps"][b].max()) > 1e-3 * res["scores"][b]


def test_enrollment_scoring_is_the_road(toy, toy_profiles):
    """_image_scores on assembled features == inspection of the same images (one code)."""
    prof = toy_profiles[("patchcore", "registered")]
    road = toy._prepared(prof, {})
    imgs = _batch()
    feats, thetas = toy._features(imgs, road.spec, road.transform)
    from careg_edge.estimators import make_estimator
    est = make_estimator("patchcore", **prof.info["estimator_params"])
    s = toy._image_scores(feats, thetas, prof.tensors, est, road.spec, prof.sigma, "max")
    np.testing.assert_allclose(s, [r.score for r in toy.inspect_batch(imgs, prof)], rtol=1e-6)
    want = ref.road(_outputs(toy, imgs, road.spec.input_size), prof)
    np.testing.assert_allclose(feats, want["features"], rtol=1e-4, atol=1e-5)


def test_cache_rebuilds_on_tensor_replacement_and_reads_threshold_per_call(toy, toy_profiles):
    prof = with_rule(toy_profiles[("padim", "unwarp")], "max")
    img = _batch()[1]
    r1 = toy.inspect(img, prof)
    assert toy._prepared(prof, {}) is toy._prepared(prof, {})
    prof.threshold = r1.score * 2
    assert not toy.inspect(img, prof).is_defect
    prof.threshold = r1.score / 2
    assert toy.inspect(img, prof).is_defect
    prof.tensors = dict(prof.tensors, mean=prof.tensors["mean"] + 1.0)
    assert toy.inspect(img, prof).score != pytest.approx(r1.score, rel=1e-3)


def test_nan_in_profile_is_a_defect_with_reason(toy, toy_profiles):
    prof = with_rule(toy_profiles[("padim", "unwarp")], "top20%")
    mean = prof.tensors["mean"].copy()
    mean[3, 2] = np.nan
    prof.tensors["mean"] = mean
    prof.threshold = 1e30
    r = toy.inspect(_batch()[0], prof)
    assert r.is_defect and not np.isfinite(r.score) and "NaN" in r.reason


def _raw(toy, prof, n=2):
    return {k: v.copy() for k, v in _outputs(toy, _batch()[:n], tuple(prof.image_size)).items()}


@pytest.mark.parametrize("field,mutate,message", [
    ("feat2", lambda o: o.__setitem__("feat2", np.concatenate([o["feat2"]] * 2, axis=1)), "feat2 has 16 channels"),
    ("feat1", lambda o: o["feat1"].__setitem__((1, 0, 3, 3), np.nan), r"feat1\[1\]: 1 non-finite"),
    ("theta_inv", lambda o: o.__setitem__("theta_inv", o["theta_inv"][:, :2].copy()), "theta_inv must be"),
    ("feat3", lambda o: o.__setitem__("feat3", o["feat3"][:1].copy()), "feat3 has batch 1"),
    ("theta", lambda o: o["theta"].__setitem__((0, 2, 0, 0), np.inf), r"theta\[0\]"),
])
def test_bad_encoder_outputs_raise_one_error_naming_the_field(toy, toy_profiles, field, mutate, message):
    prof = toy_profiles[("patchcore", "registered")]
    road = toy._prepared(prof, {})
    out = _raw(toy, prof)
    mutate(out)
    with pytest.raises(CaregError, match=message):
        scoring.inspect(road, out, prof.threshold)


def test_profile_not_matching_outputs_is_named(toy, toy_profiles):
    prof = toy_profiles[("padim", "unwarp")]
    bad = with_rule(prof, "max")
    bad.tensors = dict(prof.tensors, channel_index=prof.tensors["channel_index"] + 100)
    with pytest.raises(CaregError, match=r"channel_index\[\d+\] = \d+ is outside the 24 encoder channels"):
        toy.inspect(_batch()[0], bad)
    d = prof.tensors["mean"].shape[1]
    bad.tensors = dict(prof.tensors, channel_index=prof.tensors["channel_index"][:d - 1].copy())
    with pytest.raises(CaregError, match=f"assembly gives D = {d - 1}.*D = {d}"):
        toy.inspect(_batch()[0], bad)
    feats = np.zeros((1, 16, d), np.float32)
    with pytest.raises(CaregError, match=r"features are \[1, 16, 12\].*\[B, 256, 12\]"):
        _core.score(toy._prepared(prof, {}).scorer, feats)
    feats = np.zeros((1, 256, d), np.float32)
    feats[0, 5, 1] = np.inf
    with pytest.raises(CaregError, match=r"features\[0\]: 1 non-finite"):
        _core.score(toy._prepared(prof, {}).scorer, feats)


def test_assemble_alone_matches_oracle_for_projection_and_aggregate(toy):
    out = _raw(toy, Profile("padim", {}, 1.0, (8, 8), (64, 64), 4.0, "x"), 3)
    proj = np.linalg.qr(np.random.default_rng(0).normal(size=(24, 7)))[0].astype(np.float32)
    for mode in MODES:
        lay = _core.Layout([6, 8, 10], [64, 64], 8, mode, True, None, proj)
        got = _core.assemble(lay, {k: np.ascontiguousarray(v) for k, v in out.items()})
        want = ref.assemble(out, [6, 8, 10], (64, 64), 8, mode, True, projection=proj)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        spec_feats = assemble(out, type("S", (), {"channels": (6, 8, 10), "input_size": (64, 64),
                                                   "grid_stride": 8, "mode": mode, "aggregate": True})(),
                              {"projection": proj})
        np.testing.assert_array_equal(spec_feats, got)


# ---- real images --------------------------------------------------------------------

@pytest.fixture(scope="module")
def real():
    root = shared_path("mpdd", "metal_plate")
    from careg_edge.imageio import list_images, read_image
    support = [read_image(p) for p in list_images(root / "train" / "good")[:2]]
    tests = sorted(p for d in sorted((root / "test").iterdir()) if d.is_dir() for p in list_images(d))
    imgs = [read_image(p) for p in tests[::max(1, len(tests) // 4)][:4]]
    insp = Inspector(threads=2)
    profs = {(e, m): insp.enroll(support, estimator=e, augment="none", localisation=m, max_units=2,
                                 synth_per_unit=1, image_score="max")
             for e in ESTIMATORS for m in MODES}
    return insp, profs, imgs


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("mode", MODES)
def test_python_road_matches_numpy_oracle_real_images(real, estimator, mode):
    insp, profs, imgs = real
    for rule in RULES:
        check_parity(insp, with_rule(profs[(estimator, mode)], rule), imgs)
