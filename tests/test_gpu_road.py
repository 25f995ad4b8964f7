"""The torch road (careg_edge.gpu) against the compiled core (`_core.inspect` through
careg_edge.scoring) and the float64 NumPy oracle (tests/reference.road): every
estimator x image-score rule x localisation mode, on the fixtures of
tests/test_core_road.py (a toy encoder with a registration shift; MPDD metal_plate
when present). Runs on CPU torch everywhere; the `gpu` tests repeat the comparison
on CUDA (tests/conftest.py skips them, with the reason, on machines without one).

Tolerance (float32 torch vs float32 core vs float64 oracle): image scores within
rtol 1e-4, verdicts and reasons' verdict identical, distances within rtol 1e-4 and
maps within 1e-4 of their maximum. Device preprocessing: at most one grey level on
any pixel, on at most 1 % of them (OpenCV rounds in fixed point in places).
"""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from careg_edge import Inspector, preprocess, scoring  # noqa: E402
from careg_edge.errors import CaregError, UserInputError  # noqa: E402
from careg_edge.gpu import preprocess as gpu_preprocess  # noqa: E402
from careg_edge.gpu.device import road_device  # noqa: E402
from careg_edge.gpu.road import GpuRoad, cached_road  # noqa: E402
from tests import reference as ref  # noqa: E402
from tests.test_core_road import (ESTIMATORS, MODES, RULES, _batch, _outputs, real,  # noqa: E402,F401
                                  toy, toy_profiles, with_rule)
from tests.test_pipeline import ToyRuntime, _texture  # noqa: E402

RTOL = 1e-4
SIZES = [(64, 64), (100, 80), (64, 64), (30, 30)]   # each map also at its image's size


def compare(prof, out, device, threshold=None, overrides=None, sizes=SIZES):
    """GpuRoad vs _core.inspect vs the oracle on one batch of encoder outputs."""
    overrides = overrides or {}
    threshold = prof.threshold if threshold is None else threshold
    core = scoring.inspect(scoring.road(prof, overrides), out, threshold, sizes)
    got = GpuRoad(prof, device, overrides).inspect_dict(out, threshold, sizes)
    want = ref.road(out, prof, **overrides)
    np.testing.assert_allclose(got["scores"], core["scores"], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=RTOL, atol=1e-6)
    oracle = ~np.isfinite(want["scores"]) | (want["scores"] > threshold)
    assert got["defect"] == core["defect"] == oracle.tolist()
    np.testing.assert_allclose(got["dist"], core["dist"], rtol=RTOL, atol=1e-6)
    scale = float(np.abs(core["maps"]).max())
    np.testing.assert_allclose(got["maps"], core["maps"], rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_allclose(got["maps"], want["maps"], rtol=RTOL, atol=RTOL * scale)
    for a, b, s in zip(got["maps_at"], core["maps_at"], sizes):
        assert a.shape == tuple(s)
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * scale)
    for r, d in zip(got["reason"], got["defect"]):
        assert (" > threshold" in r) == d
    return got, core


def split_threshold(prof, out):
    """A threshold between the 2nd and 3rd image score: two verdicts each way."""
    s = np.sort(scoring.inspect(scoring.road(prof), out, prof.threshold)["scores"])
    return float((s[1] + s[2]) / 2)


def check_all(toy, toy_profiles, device):
    for (estimator, mode), base in toy_profiles.items():
        for rule in RULES:
            prof = with_rule(base, rule)
            out = _outputs(toy, _batch(), tuple(prof.image_size))
            got, _ = compare(prof, out, device, split_threshold(prof, out))
            assert got["defect"].count(True) == 2
            assert got["scores"][1] > got["scores"][0]   # the pasted patch scores higher


# ---- CPU torch: always --------------------------------------------------------------

@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rule", RULES)
def test_torch_road_matches_core_and_oracle_synthetic(toy, toy_profiles, estimator, mode, rule):
    prof = with_rule(toy_profiles[(estimator, mode)], rule)
    out = _outputs(toy, _batch(), tuple(prof.image_size))
    compare(prof, out, "cpu")
    got, core = compare(prof, out, "cpu", split_threshold(prof, out))
    assert got["defect"].count(True) == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("radius", [0, 1])
def test_local_search_with_fallback_matches_core(toy, toy_profiles, mode, radius):
    prof = with_rule(toy_profiles[("patchcore", mode)], "mean")   # every distance counts
    out = _outputs(toy, _batch(), tuple(prof.image_size))
    glob, _ = compare(prof, out, "cpu")
    loc, _ = compare(prof, out, "cpu", overrides={"search": "local", "radius": radius})
    assert not np.allclose(glob["dist"], loc["dist"])    # the window is really used
    # an empty window falls back to the whole bank: a bank enrolled in one corner cell only
    t = dict(prof.tensors, bank_pos=np.zeros_like(prof.tensors["bank_pos"]))
    corner = with_rule(prof, "max")
    corner.tensors = t
    compare(corner, out, "cpu", overrides={"search": "local", "radius": radius})


def test_inspect_tuple_api_and_device_tensors(toy, toy_profiles):
    prof = with_rule(toy_profiles[("patchcore", "registered")], "max")
    out = _outputs(toy, _batch(), tuple(prof.image_size))
    road = GpuRoad(prof, "cpu")
    t = {k: torch.from_numpy(v) for k, v in out.items()}
    scores, maps, defect, reason = road.inspect(t["feat1"], t["feat2"], t["feat3"], t["theta"],
                                                t["theta_inv"], prof.threshold)
    core = scoring.inspect(scoring.road(prof), out, prof.threshold)
    np.testing.assert_allclose(scores, core["scores"], rtol=RTOL)
    assert isinstance(maps, torch.Tensor) and tuple(maps.shape) == core["maps"].shape
    assert defect == core["defect"] and len(reason) == 4


def test_nan_in_profile_is_a_defect_with_the_cores_reason(toy, toy_profiles):
    prof = with_rule(toy_profiles[("padim", "unwarp")], "top20%")
    mean = prof.tensors["mean"].copy()
    mean[3, 2] = np.nan
    prof.tensors = dict(prof.tensors, mean=mean)
    out = _outputs(toy, _batch()[:2], tuple(prof.image_size))
    got = GpuRoad(prof, "cpu").inspect_dict(out, 1e30)
    core = scoring.inspect(scoring.road(prof), out, 1e30)
    assert np.isnan(got["scores"]).all() and got["defect"] == [True, True]
    assert got["reason"] == core["reason"] and "NaN" in got["reason"][0]
    # the NaN reaches the same pixels through unwarp and blur as in the core
    assert 0 < np.isnan(core["maps"]).mean() < 1
    np.testing.assert_array_equal(np.isnan(got["maps"]), np.isnan(core["maps"]))
    got = GpuRoad(with_rule(toy_profiles[("padim", "unwarp")], "max"), "cpu").inspect_dict(out, float("nan"))
    assert got["defect"] == [True, True] and got["reason"][0].startswith("the threshold is not finite")


def test_non_finite_bank_rows_never_win(toy, toy_profiles):
    prof = with_rule(toy_profiles[("patchcore", "unwarp")], "max")
    bank = prof.tensors["bank"].copy()
    bank[::3, 1] = np.inf
    bank[1::3, 0] = np.nan
    prof.tensors = dict(prof.tensors, bank=bank)
    out = _outputs(toy, _batch(), tuple(prof.image_size))
    core = scoring.inspect(scoring.road(prof), out, prof.threshold)
    got = GpuRoad(prof, "cpu").inspect_dict(out, prof.threshold)
    assert np.isfinite(core["scores"]).all()
    np.testing.assert_allclose(got["scores"], core["scores"], rtol=RTOL)
    np.testing.assert_allclose(got["dist"], core["dist"], rtol=RTOL)


def _raw(toy, prof, n=2):
    return {k: v.copy() for k, v in _outputs(toy, _batch()[:n], tuple(prof.image_size)).items()}


@pytest.mark.parametrize("mutate", [
    lambda o: o.__setitem__("feat2", np.concatenate([o["feat2"]] * 2, axis=1)),
    lambda o: o["feat1"].__setitem__((1, 0, 3, 3), np.nan),
    lambda o: o.__setitem__("theta_inv", o["theta_inv"][:, :2].copy()),
    lambda o: o.__setitem__("feat3", o["feat3"][:1].copy()),
    lambda o: o["theta"].__setitem__((0, 2, 0, 0), np.inf),
    lambda o: o["theta_inv"].__setitem__((1, 2), 0.0),     # degenerate heatmap unwarp
], ids=["channels", "nan-feat1", "theta_inv-shape", "batch", "inf-theta", "singular-theta_inv"])
def test_bad_encoder_outputs_raise_the_cores_error(toy, toy_profiles, mutate):
    prof = toy_profiles[("patchcore", "registered")]
    out = _raw(toy, prof)
    mutate(out)
    with pytest.raises(CaregError) as core:
        scoring.inspect(scoring.road(prof), out, prof.threshold)
    with pytest.raises(CaregError) as got:
        GpuRoad(prof, "cpu").inspect_dict(out, prof.threshold)
    # the core appends the C++ condition that failed: "(check failed: ...)"
    assert str(got.value) == re.sub(r" \(check failed: .*\)$", "", str(core.value))


def test_non_finite_features_raise_the_cores_error(toy, toy_profiles):
    prof = with_rule(toy_profiles[("orthoad", "unwarp")], "max")
    proj = prof.tensors["projection"].copy()
    proj[5, 3] = np.nan                   # every position's feature 3 becomes NaN
    prof.tensors = dict(prof.tensors, projection=proj)
    out = _raw(toy, prof)
    with pytest.raises(CaregError) as core:
        scoring.inspect(scoring.road(prof), out, prof.threshold)
    with pytest.raises(CaregError, match=r"features\[0\]: \d+ non-finite") as got:
        GpuRoad(prof, "cpu").inspect_dict(out, prof.threshold)
    assert str(got.value) == re.sub(r" \(check failed: .*\)$", "", str(core.value))


def test_projection_profile_dimension_mismatch_is_named(toy, toy_profiles):
    prof = with_rule(toy_profiles[("orthoad", "unwarp")], "max")
    bad = with_rule(prof, "max")
    bad.tensors = dict(prof.tensors, projection=prof.tensors["projection"][:, :-1].copy())
    with pytest.raises(CaregError, match=r"assembly gives D = \d+"):
        GpuRoad(bad, "cpu").inspect_dict(_raw(toy, prof), 1.0)


# ---- the Inspector's choice of road -------------------------------------------------

class _OnDevice:
    def __init__(self, device):
        self.device = device


def test_road_device_follows_runtime_and_environment(monkeypatch):
    monkeypatch.delenv("CAREG_GPU_ROAD", raising=False)
    assert road_device(_OnDevice("cuda:1")) == "cuda:1"
    assert road_device(object()) is None and road_device(_OnDevice("cpu")) is None
    assert road_device(_OnDevice("cuda"), gpu_road=False) is None
    assert road_device(_OnDevice("cpu"), gpu_road=True) == "cpu"
    monkeypatch.setenv("CAREG_GPU_ROAD", "0")
    assert road_device(_OnDevice("cuda")) is None
    monkeypatch.setenv("CAREG_GPU_ROAD", "1")
    assert road_device(_OnDevice("cpu")) == "cpu"
    monkeypatch.setenv("CAREG_GPU_ROAD", "maybe")
    with pytest.raises(UserInputError, match="CAREG_GPU_ROAD"):
        road_device(_OnDevice("cuda"))


def test_inspector_runs_the_torch_road_when_asked(monkeypatch, toy_profiles):
    runtime = ToyRuntime(theta=np.array([[0.12, -0.08]] * 3, np.float32))
    monkeypatch.setenv("CAREG_GPU_ROAD", "1")
    on = Inspector(runtime)
    monkeypatch.setenv("CAREG_GPU_ROAD", "0")
    off = Inspector(runtime)
    assert on.road_device == "cpu" and off.road_device is None
    imgs = [_texture(40), _batch()[1], np.ascontiguousarray(np.repeat(_texture(41), 2, 0)),
            _texture(42)[:40, :50]]                # 2x shrink, enlargement: resized on the device
    for key in [("patchcore", "registered"), ("padim", "unwarp")]:
        prof = with_rule(toy_profiles[key], "top20%")
        assert isinstance(on._prepared(prof, {}), GpuRoad)
        assert on._prepared(prof, {}) is cached_road(prof, {}, "cpu")     # uploaded once
        a, b = on.inspect_batch(imgs, prof), off.inspect_batch(imgs, prof)
        for x, y in zip(a, b):
            # the device resize may differ by a grey level on a few pixels: 1e-3, not 1e-4
            assert x.score == pytest.approx(y.score, rel=1e-3)
            assert x.is_defect == y.is_defect and x.anomaly_map.shape == y.anomaly_map.shape
            assert set(x.timings) == set(y.timings)
        same = on.inspect_batch(imgs[:2], prof)   # input size: no resize, so the core's tolerance
        np.testing.assert_allclose([r.score for r in same], [r.score for r in b[:2]], rtol=RTOL)


def test_cached_road_rebuilds_on_tensor_replacement(toy_profiles):
    prof = with_rule(toy_profiles[("padim", "unwarp")], "max")
    first = cached_road(prof, {}, "cpu")
    assert cached_road(prof, {}, "cpu") is first
    assert cached_road(prof, {"search": "global"}, "cpu") is not first
    prof.tensors = dict(prof.tensors, mean=prof.tensors["mean"] + 1.0)
    again = cached_road(prof, {}, "cpu")
    assert again is not first and torch.equal(again.kernel.mean.cpu(), torch.from_numpy(prof.tensors["mean"]))


# ---- device preprocessing -----------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64), (128, 128), (200, 150), (97, 131), (40, 50), (100, 40)],
                         ids=["same", "2x-shrink", "shrink", "odd-shrink", "enlarge", "mixed"])
def test_device_preprocess_matches_host(shape):
    rng = np.random.default_rng(sum(shape))
    meta = ToyRuntime().meta
    imgs = [rng.integers(0, 256, size=shape + (3,), dtype=np.uint8) for _ in range(2)]
    imgs[1] = np.clip(imgs[1].astype(int) // 3 + 80, 0, 255).astype(np.uint8)   # smoother
    want = preprocess.normalise([preprocess.resize(i, (64, 64)) for i in imgs], meta)
    got = gpu_preprocess.to_input(imgs, (64, 64), meta, "cpu").numpy()
    level = np.float32(meta.scale) / np.min(meta.std)      # one grey level, normalised
    diff = np.abs(got - want)
    assert diff.max() <= level * 1.0001
    assert (diff > 1e-5).mean() <= 0.01


# ---- CUDA: the same comparisons on the GPU ------------------------------------------

@pytest.mark.gpu   # tests/conftest.py skips it, with the reason, without CUDA
def test_torch_road_matches_core_on_cuda_synthetic(toy, toy_profiles):
    check_all(toy, toy_profiles, "cuda")
    for mode in MODES:
        prof = with_rule(toy_profiles[("patchcore", mode)], "mean")
        out = _outputs(toy, _batch(), tuple(prof.image_size))
        compare(prof, out, "cuda", overrides={"search": "local", "radius": 1})


@pytest.mark.gpu   # tests/conftest.py skips it, with the reason, without CUDA
@pytest.mark.parametrize("shape", [(128, 128), (200, 150), (40, 50)])
def test_device_preprocess_matches_host_on_cuda(shape):
    rng = np.random.default_rng(1)
    meta = ToyRuntime().meta
    imgs = [rng.integers(0, 256, size=shape + (3,), dtype=np.uint8) for _ in range(3)]
    want = preprocess.normalise([preprocess.resize(i, (64, 64)) for i in imgs], meta)
    got = gpu_preprocess.to_input(imgs, (64, 64), meta, "cuda").cpu().numpy()
    diff = np.abs(got - want)
    assert diff.max() <= np.float32(meta.scale) / np.min(meta.std) * 1.0001
    assert (diff > 1e-5).mean() <= 0.01


@pytest.mark.gpu   # tests/conftest.py skips it, with the reason, without CUDA
def test_inspector_on_cuda_uses_the_torch_road_and_agrees(monkeypatch):
    """A real encoder on CUDA: the torch road on the encoder's own outputs equals the
    core on the same outputs (copied to the host), for every estimator."""
    monkeypatch.delenv("CAREG_GPU_ROAD", raising=False)
    from careg_edge.gpu.road import device_outputs
    from careg_edge.runtime.torch_backend import TorchRuntime
    insp = Inspector(TorchRuntime("imagenet:efficientnet_lite0", device="cuda"))
    assert insp.road_device.startswith("cuda")
    support = [_texture(s, 224) for s in range(3)]
    imgs = [_texture(30 + i, 224) for i in range(4)]
    imgs[1][60:100, 30:80] = [250, 20, 20]
    for estimator in ESTIMATORS:
        prof = insp.enroll(support, estimator=estimator, augment="none", max_units=2)
        x = gpu_preprocess.to_input(imgs, (224, 224), insp.meta, "cuda")
        out = device_outputs(insp.runtime, x)
        host = {k: v.cpu().numpy() for k, v in out.items()}
        core = scoring.inspect(scoring.road(prof), host, prof.threshold)
        got = cached_road(prof, {}, insp.road_device).inspect_dict(out, prof.threshold)
        np.testing.assert_allclose(got["scores"], core["scores"], rtol=RTOL)
        assert got["defect"] == core["defect"]
        results = insp.inspect_batch(imgs, prof)   # end to end through the Inspector
        assert [r.is_defect for r in results] == core["defect"]


# ---- real images ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_torch_road_matches_core_real_images(real, estimator):
    insp, profs, imgs = real
    for mode in MODES:
        for rule in RULES:
            prof = with_rule(profs[(estimator, mode)], rule)
            x = preprocess.normalise([preprocess.resize(i, tuple(prof.image_size)) for i in imgs], insp.meta)
            out = insp.runtime.infer(x)
            compare(prof, out, "cpu", sizes=[i.shape[:2] for i in imgs])


def test_reduced_matmul_precision_is_lifted_for_the_road_and_restored(toy, toy_profiles):
    prof = with_rule(toy_profiles[("orthoad", "unwarp")], "max")   # projection + Mahalanobis
    out = _outputs(toy, _batch(), tuple(prof.image_size))
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        compare(prof, out, "cpu")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(was)


def test_empty_batch_gives_empty_results_like_the_core(toy, toy_profiles):
    prof = toy_profiles[("patchcore", "unwarp")]
    out = {k: v[:0].copy() for k, v in _outputs(toy, _batch()[:1], tuple(prof.image_size)).items()}
    core = scoring.inspect(scoring.road(prof), out, prof.threshold, [])
    got = GpuRoad(prof, "cpu").inspect_dict(out, prof.threshold, [])
    for k in ("dist", "maps", "scores"):
        assert got[k].shape == core[k].shape
    assert got["defect"] == list(core["defect"]) == [] and got["maps_at"] == list(core["maps_at"]) == []


def test_read_only_frames_upload_without_a_warning(recwarn):
    meta = ToyRuntime().meta
    img = _texture(7, 128)
    img.setflags(write=False)                  # a decoded frame handed over read-only
    got = gpu_preprocess.to_input([img], (64, 64), meta, "cpu").numpy()
    np.testing.assert_array_equal(got, preprocess.normalise([preprocess.resize(img, (64, 64))], meta))
    assert not [w for w in recwarn if "not writable" in str(w.message)]


@pytest.mark.parametrize("rule", ["max", "mean", "top10%", "top30%", "top50%", "top0.5%", "top100%"])
def test_image_score_rules_round_the_count_like_the_core(rule):
    """N = 35 cells: 10 % -> 3.5 -> 4 and 30 % -> 10.5 -> 10 (ties to even), 50 % -> 17.5
    -> 18, 0.5 % -> at least 1: the oracle's count (Python's round, as the core's)."""
    from careg_edge.gpu.maps import image_scores
    maps = np.random.default_rng(3).random((3, 5, 7)).astype(np.float32)
    kind = "top" if rule.startswith("top") else rule
    percent = float(rule[3:-1]) if kind == "top" else (100.0 if rule == "mean" else 0.0)
    got = image_scores(torch.from_numpy(maps), kind, percent).numpy()
    np.testing.assert_allclose(got, ref.image_score(maps, rule), rtol=1e-6)
