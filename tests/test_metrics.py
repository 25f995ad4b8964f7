"""careg_edge.lab.metrics against independent references: scikit-learn for AUROC,
a plain threshold loop for PRO and F1-max."""
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from careg_edge.errors import UserInputError
from careg_edge.lab import metrics


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y = rng.random(n) < 0.4
    y[:2] = [True, False]
    s = rng.normal(size=n) + y * rng.random()
    if seed % 2:  # heavy ties
        s = np.round(s, 1)
    assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_pixel_auroc_matches_sklearn_with_ties_and_odd_shapes():
    rng = np.random.default_rng(7)
    masks = [rng.random((13, 17)) < 0.2, np.zeros((9, 31), bool), rng.random((20, 20)) < 0.05]
    maps = [np.round(rng.random(m.shape) + m * 0.3, 2).astype(np.float32) for m in masks]
    ref = roc_auc_score(np.concatenate([m.ravel() for m in masks]),
                        np.concatenate([a.ravel() for a in maps]))
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(ref, abs=1e-9)


def test_auroc_extremes_and_errors():
    assert metrics.auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert metrics.auroc([0, 1], [0.5, 0.5]) == 0.5
    assert np.isnan(metrics.auroc([1, 1], [0.1, 0.2]))
    with pytest.raises(UserInputError, match="labels"):
        metrics.auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(UserInputError, match="NaN"):
        metrics.auroc([0, 1], [0.1, np.nan])
    with pytest.raises(UserInputError, match="differ in size"):
        metrics.pixel_auroc([np.zeros((3, 3))], [np.zeros((3, 4))])


def reference_aupro(masks, maps, max_fpr=0.3):
    """Straightforward: every distinct threshold, regions counted one by one."""
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normal = [~m for m in masks]
    n_normal = sum(int(x.sum()) for x in normal)
    pts = [(0.0, 0.0)]
    for t in np.unique(np.concatenate([a.ravel() for a in maps]))[::-1]:
        fp = sum(int((a[nm] >= t).sum()) for a, nm in zip(maps, normal))
        pro = np.mean([(maps[i][r] >= t).mean() for i, r in regions])
        pts.append((fp / n_normal, pro))
    x, y = np.array(pts).T
    # integrate to max_fpr, interpolating the segment that crosses it
    area = 0.0
    for k in range(1, len(x)):
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


def _synthetic_masks(rng):
    masks = []
    for shape in [(16, 16), (12, 20), (16, 16), (10, 10)]:
        m = np.zeros(shape, bool)
        for _ in range(int(rng.integers(0, 3))):
            r, c = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
            m[r:r + int(rng.integers(1, 4)), c:c + int(rng.integers(1, 5))] = True
        m[0, 0] = m[1, 1] = shape == (16, 16)  # a diagonal pair: one region only if 8-connected
        masks.append(m)
    return masks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_aupro_matches_straightforward_reference(seed, max_fpr):
    rng = np.random.default_rng(seed)
    masks = _synthetic_masks(rng)
    maps = [(rng.random(m.shape) + 0.6 * m * rng.random()).astype(np.float32) for m in masks]
    if seed % 3 == 0:
        maps = [np.round(a, 1) for a in maps]  # ties across normal and region pixels
    got = metrics.aupro(masks, maps, max_fpr)
    assert got == pytest.approx(reference_aupro(masks, maps, max_fpr), abs=1e-9)


def test_aupro_perfect_and_regions_weighted_equally():
    m = np.zeros((10, 10), bool)
    m[0:2, 0:2] = True          # small region, detected
    m[5:10, 5:10] = True        # large region, missed
    perfect = m.astype(np.float32)
    assert metrics.aupro([m], [perfect]) == pytest.approx(1.0)
    a = np.zeros((10, 10), np.float32)
    a[0:2, 0:2] = 1.0
    # curve (0,0) -> (0,0.5) -> (1,1): the small region counts as much as the large one
    assert metrics.aupro([m], [a]) == pytest.approx((0.5 + 0.65) / 2)
    assert metrics.aupro([m], [a]) == pytest.approx(reference_aupro([m], [a]), abs=1e-12)


def test_region_labels_are_8_connected():
    m = np.eye(4, dtype=bool)
    assert metrics.label_regions(m)[1] == 1


def brute_f1(y, s):
    best = 0.0
    for t in np.unique(s):
        p = s >= t
        tp = int((p & y).sum())
        if tp:
            prec, rec = tp / p.sum(), tp / y.sum()
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(150) < 0.3
    y[0] = True
    s = np.round(rng.normal(size=150) + y, 1 if seed % 2 else 6)
    f1, thr = metrics.f1_max(y, s)
    assert f1 == pytest.approx(brute_f1(y, s), abs=1e-12)
    p = s >= thr
    assert 2 * (p & y).sum() / (p.sum() + y.sum()) == pytest.approx(f1)


def test_rates_at_threshold():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.5, 0.6, 0.2, 0.5, 0.9, 0.4])
    fpr, det = metrics.rates_at_threshold(y, s, 0.5)
    assert fpr == pytest.approx(1 / 4)   # only 0.6 > 0.5
    assert det == pytest.approx(1 / 3)   # only 0.9


def test_roc_curve_monotone_and_ends_at_corners():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.5
    s = rng.normal(size=500) + y
    fpr, tpr = metrics.roc_curve(y, s, max_points=50)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, s), abs=0.02)


def test_pixel_metrics_large_input_is_fast():
    import time
    rng = np.random.default_rng(0)
    masks = [rng.random((256, 256)) < 0.01 for _ in range(60)]
    maps = [rng.random((256, 256)).astype(np.float32) for _ in range(60)]
    t = time.perf_counter()
    metrics.pixel_auroc(masks, maps)
    metrics.aupro(masks, maps)
    assert time.perf_counter() - t < 15.0


def test_pixel_auroc_and_curve_agree_with_separate_calls():
    rng = np.random.default_rng(3)
    masks = [rng.random((30, 20)) < 0.1 for _ in range(4)]
    maps = [rng.random(m.shape).astype(np.float32) + m for m in masks]
    a, (fpr, tpr) = metrics.pixel_auroc_and_curve(masks, maps, 100)
    assert a == metrics.pixel_auroc(masks, maps)
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([x.ravel() for x in maps])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, s), abs=0.01)
    assert (np.diff(fpr) >= 0).all() and fpr[0] == 0 and tpr[-1] == 1


# --------------------------------------------------------------------------- line metrics
def _sklearn_detection_at(y, s, t):
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return tpr[fpr <= t + 1e-12].max()


@pytest.mark.parametrize("seed", range(8))
def test_detection_at_fpr_matches_sklearn_roc_curve(seed):
    rng = np.random.default_rng(seed)
    n_neg, n_pos = int(rng.integers(5, 900)), int(rng.integers(1, 200))
    neg, pos = rng.normal(size=n_neg), rng.normal(size=n_pos) + rng.random() * 2
    if seed % 2:   # heavy ties, also across the classes
        neg, pos = np.round(neg, 1), np.round(pos, 1)
    y, s = np.r_[np.zeros(n_neg), np.ones(n_pos)], np.r_[neg, pos]
    for t in (0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 1 / n_neg, 3 / n_neg, 0.99):
        assert metrics.detection_at_fpr(pos, neg, t) == pytest.approx(_sklearn_detection_at(y, s, t)), t


def test_detection_at_fpr_is_conservative_on_the_step_function():
    neg = np.arange(100.0)                  # 1 % FPR: at most one good image above
    pos = np.array([97.5, 98.5, 200.0])
    assert metrics.detection_at_fpr(pos, neg, 0.01) == pytest.approx(2 / 3)   # thr in (98, 98.5]
    assert metrics.detection_at_fpr(pos, neg, 0.0099) == pytest.approx(1 / 3)  # no false alarm
    assert metrics.detection_at_fpr(pos, neg, 0.02) == 1.0
    assert metrics.detection_at_fpr([5.0], [5.0, 5.0], 0.5) == 0.0   # ties cannot be split
    assert np.isnan(metrics.detection_at_fpr([], neg, 0.01))


def test_rates_split_uses_the_sdk_rule_score_above_threshold():
    fpr, det = metrics.rates_split([1.0, 2.0, 3.0], [0.5, 1.0, 1.5, 2.0], 1.0)
    assert (fpr, det) == (0.5, pytest.approx(2 / 3))   # equal to the threshold passes
    assert all(np.isnan(metrics.rates_split([1.0], [0.0], float("nan"))))
    assert metrics.rates_split([1.0], [0.0], float("inf")) == (0.0, 0.0)
    # agrees with the labelled version the report used before
    assert metrics.rates_split([1.0, 2.0, 3.0], [0.5, 1.0, 1.5, 2.0], 1.2) == \
        metrics.rates_at_threshold([1, 1, 1, 0, 0, 0, 0], [1.0, 2.0, 3.0, 0.5, 1.0, 1.5, 2.0], 1.2)
