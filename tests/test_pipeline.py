"""Inspector end to end with a tiny deterministic NumPy encoder (fast), and on real
MPDD metal_plate with the ImageNet resnet50v2 baseline (slow, skipped without data)."""
import numpy as np
import pytest

from careg_edge import Inspector, Profile
from careg_edge.errors import EncoderMismatch, UserInputError
from careg_edge.encoder_meta import EncoderMeta
from careg_edge.runtime.base import Runtime


def _pool(x, s):
    b, c, h, w = x.shape
    return x.reshape(b, c, h // s, s, w // s, s).mean(axis=(3, 5))


class ToyRuntime(Runtime):
    """Fixed random 1x1 'convolutions' over pooled pixels and their squares: enough
    structure for a pasted patch to change the features where it is."""
    name = "toy"

    def __init__(self, size=(64, 64), hash_="toy" * 8, theta=None):
        self.meta = EncoderMeta(hash_, "toy", size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                                channels=(6, 8, 10))
        self.theta = theta
        rng = np.random.default_rng(0)
        self.w = [rng.normal(size=(c, 6)) for c in (6, 8, 10)]

    def infer(self, x):
        from careg_edge import _core
        base = np.concatenate([x, x ** 2], axis=1)
        b = len(x)
        th = np.zeros((b, 3, 2, 3), np.float32)
        th[:, :, 0, 0] = th[:, :, 1, 1] = 1
        if self.theta is not None:  # pure shift: registered frame = image shifted by theta
            th[:, :, :, 2] = self.theta
        inv = th.copy()
        inv[:, :, :, 2] *= -1
        out = {"theta": th, "theta_inv": inv}
        for k, s in enumerate((4, 8, 16)):
            f = np.tanh(np.einsum("oc,bchw->bohw", self.w[k], _pool(base, s))).astype(np.float32)
            # registered map: F_reg(p) = F_img(theta_k p)
            out[f"feat{k + 1}"] = _core.affine_sample(f, np.ascontiguousarray(th[:, k]),
                                                      f.shape[2], f.shape[3])
        return out


def _texture(seed, size=64):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 128 + 40 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    img = base[..., None] + rng.normal(0, 4, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def insp():
    return Inspector(ToyRuntime())


@pytest.mark.parametrize("estimator", ["padim", "orthoad", "patchcore"])
def test_pasted_defect_scores_above_clean_twin(insp, estimator, tmp_path):
    support = [_texture(s) for s in range(4)]
    prof = insp.enroll(support, estimator=estimator, augment="none", d=20, seed=0)
    clean = _texture(10)
    bad = clean.copy()
    bad[40:50, 12:22] = [250, 20, 20]
    r_clean, r_bad = insp.inspect_batch([clean, bad], prof)
    assert r_bad.score > r_clean.score
    peak = np.unravel_index(np.argmax(r_bad.anomaly_map), r_bad.anomaly_map.shape)
    assert 40 - 4 <= peak[0] < 50 + 4 and 12 - 4 <= peak[1] < 22 + 4
    assert r_bad.anomaly_map.shape == (64, 64) and r_bad.anomaly_map.dtype == np.float32
    assert r_bad.is_defect == (r_bad.score > prof.threshold)
    assert set(r_bad.timings) >= {"preprocess", "encode", "features", "score", "postprocess"}
    # a round trip through the file scores identically
    again = insp.inspect(bad, Profile.load(prof.save(tmp_path / "p.careg")))
    # alone vs in a batch of two: BLAS may round the projection differently (1e-7)
    assert again.score == pytest.approx(r_bad.score, rel=1e-5)


def test_map_comes_back_at_input_resolution(insp):
    prof = insp.enroll([_texture(1), _texture(2)], estimator="padim", augment="none", d=10)
    r = insp.inspect(np.zeros((100, 37, 3), np.uint8), prof)
    assert r.anomaly_map.shape == (100, 37) and r.mask.shape == (100, 37)
    assert r.mask.dtype == bool


def test_profile_records_enrollment(insp):
    prof = insp.enroll([_texture(3)], estimator="padim", augment="auto", d=10, seed=1)
    a, c = prof.info["augment"], prof.info["calibration"]
    assert set(a["distances"]) == {"greying", "flipping", "large_rotation", "small_rotation",
                                   "large_translation", "small_translation", "brightness",
                                   "gaussian_blur", "centre_crop", "mixup"}
    mean = np.mean(list(a["distances"].values()))
    assert a["chosen"] == [g for g, d in a["distances"].items() if d <= mean]
    assert prof.info["support"]["n_views"] == 1 + len(a["ops"])
    assert len(c["loo_scores"]) > 0 and len(c["synthetic_scores"]) > 0
    assert c["threshold"] == prof.threshold and c["model"]["k"] == 1
    # K=1: the level of the held-out views, the spread and correction of the prior
    p, x = c["prior_params"], np.log(c["loo_scores"])
    want = np.exp(x.mean() + p["bias"] + p["q"] * p["sigma0"] * np.sqrt(2.0))
    assert c["threshold"] == pytest.approx(want, rel=1e-6)  # scores stored to 6 digits
    assert prof.info["encoder"]["encoder_hash"] == prof.encoder_hash
    assert prof.tensors["channel_index"].shape == (10,)


def test_threshold_scores_held_out_images_unaugmented(insp):
    # Inspection never augments: with K >= 2 each held-out image gives exactly one
    # negative score (its own), not one per flipped/rotated view.
    prof = insp.enroll([_texture(s) for s in (4, 5, 6)], estimator="padim",
                       augment="flipping", d=10, seed=0)
    c = prof.info["calibration"]
    assert prof.info["support"]["n_views"] > 3
    assert len(c["loo_scores"]) == len(c["held_out_units"]) == 3


@pytest.mark.parametrize("mode", ["registered", "unwarp"])
def test_both_localisation_modes_put_the_peak_on_the_defect(mode):
    # Registered maps shifted by a quarter of the image: features (unwarp) or the
    # heatmap (registered) go back through theta_inv, so the peak lands on the defect.
    insp = Inspector(ToyRuntime(theta=np.array([0.25, -0.125], np.float32)))
    prof = insp.enroll([_texture(s) for s in range(3)], estimator="padim", augment="none",
                       d=10, localisation=mode)
    bad = _texture(9)
    bad[8:18, 40:50] = 255
    r = insp.inspect(bad, prof)
    peak = np.unravel_index(np.argmax(r.anomaly_map), r.anomaly_map.shape)
    assert 4 <= peak[0] < 22 and 36 <= peak[1] < 54


def test_wrong_encoder_and_bad_input(insp, tmp_path):
    prof = insp.enroll([_texture(1)], estimator="padim", augment="flipping", d=10)
    path = prof.save(tmp_path / "other.careg")
    with pytest.raises(UserInputError, match="nothing to hold out"):
        insp.enroll([_texture(1)], estimator="padim", augment="none")
    with pytest.raises(EncoderMismatch, match="other.careg"):
        Inspector(ToyRuntime(hash_="x" * 24)).inspect(_texture(2), Profile.load(path))
    with pytest.raises(UserInputError, match="empty"):
        insp.enroll([], estimator="padim")
    with pytest.raises(UserInputError, match="missing.png"):
        insp.enroll([tmp_path / "missing.png"], estimator="padim")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(UserInputError, match="broken.png"):
        insp.inspect(tmp_path / "broken.png", prof)
    with pytest.raises(UserInputError, match="target_fpr"):
        insp.enroll([_texture(1)], target_fpr=0)


def test_mixed_modes_and_sizes_are_converted(insp, tmp_path):
    from PIL import Image
    Image.fromarray(_texture(1)[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(_texture(2)).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(np.dstack([_texture(3), np.full((64, 64), 255, np.uint8)])).save(tmp_path / "a.png")
    Image.fromarray((_texture(4)[..., 0].astype(np.uint16) * 256)).save(tmp_path / "g16.png")
    Image.fromarray(_texture(5)).resize((80, 50)).save(tmp_path / "small.png")
    files = sorted(tmp_path.glob("*.png"))
    prof = insp.enroll(files, estimator="padim", augment="none", d=10)
    assert prof.info["support"]["k"] == 5 and np.isfinite(prof.threshold)
    assert insp.inspect(files[-1], prof).anomaly_map.shape == (50, 80)


def test_enroll_reports_monotonic_progress_to_one(insp):
    seen = []
    insp.enroll([_texture(s) for s in (7, 8)], estimator="padim", augment="flipping", d=10,
                progress=lambda frac, stage="": seen.append((frac, stage)))
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0 and 0 < fracs[0] < 0.2
    assert {"load", "encode", "augment", "fit", "calibrate"} <= {s for _, s in seen}


def test_two_threads_enroll_on_one_inspector(insp):
    """Each thread hears only its own progress, and both profiles equal sequential ones."""
    import threading
    sets = {"a": [_texture(s) for s in (7, 8)], "b": [_texture(s) for s in (21, 22, 23)]}
    solo = {n: insp.enroll(imgs, estimator="padim", augment="flipping", d=10) for n, imgs in sets.items()}
    seen, got, start = {"a": [], "b": []}, {}, threading.Barrier(2)

    def work(n):
        start.wait()
        got[n] = insp.enroll(sets[n], estimator="padim", augment="flipping", d=10,
                             progress=lambda frac, stage="", n=n: seen[n].append(
                                 (threading.get_ident(), frac)))
        seen[n] = [(tid == threading.get_ident(), f) for tid, f in seen[n]]

    threads = [threading.Thread(target=work, args=(n,)) for n in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in sets:
        assert seen[n] and all(mine for mine, _ in seen[n]) and seen[n][-1][1] == 1.0
        assert got[n].info["support"]["k"] == len(sets[n])
        assert got[n].threshold == pytest.approx(solo[n].threshold, rel=1e-6)
        for key, v in solo[n].tensors.items():
            np.testing.assert_allclose(got[n].tensors[key], v, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rule", ["mean", "top10%", "top100%"])
def test_image_score_rule_is_stored_and_used(insp, rule, tmp_path):
    """The score is the named statistic of the smoothed map in the input frame (checked
    against NumPy on the map inspect itself returns), and survives a save/load."""
    support = [_texture(s) for s in range(3)]
    prof = insp.enroll(support, estimator="padim", augment="none", d=10, image_score=rule)
    assert prof.info["image_score"] == rule
    img = _texture(11)
    img[20:30, 20:30] = [250, 20, 20]
    r = insp.inspect(img, prof)          # 64x64 input: the map is in the input frame
    flat = np.sort(r.anomaly_map.ravel())
    n = len(flat) if rule in ("mean", "top100%") else round(0.1 * len(flat))
    assert r.score == pytest.approx(flat[-n:].mean(), rel=1e-5)
    again = insp.inspect(img, Profile.load(prof.save(tmp_path / "p.careg")))
    assert again.score == r.score
    # the threshold was calibrated with the same rule: a max-rule profile differs
    peak = insp.inspect(img, insp.enroll(support, estimator="padim", augment="none", d=10,
                                         image_score="max"))
    assert peak.score == pytest.approx(flat[-1], rel=1e-5) and peak.score > r.score


@pytest.mark.parametrize("bad", ["median", "top0%", "top101%", "topx%", "top5"])
def test_bad_image_score_is_one_clear_error(insp, bad):
    with pytest.raises(UserInputError, match="image score"):
        insp.enroll([_texture(1), _texture(2)], estimator="padim", augment="none", d=10,
                    image_score=bad)


def test_leave_one_out_drops_mixup_views_that_contain_the_held_out_image(insp, monkeypatch):
    # K=3 + mixup: rows are 3 originals and 3 blends (i with i+1). Holding out image u
    # must drop its original, its own blend and the blend of u-1 (half of it is u).
    from careg_edge.estimators.padim import PaDiM
    sizes, fit = [], PaDiM.fit

    def spy(self, feats, grid, groups, seed=0):
        sizes.append(len(feats))
        return fit(self, feats, grid, groups, seed)
    monkeypatch.setattr(PaDiM, "fit", spy)
    insp.enroll([_texture(s) for s in (7, 8, 9)], estimator="padim", augment="mixup", d=10,
                synth_per_unit=0)
    assert sizes == [6, 3, 3, 3]
