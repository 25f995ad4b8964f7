"""The evaluation protocol on a tiny synthetic MVTec-layout dataset with a fake
Inspector: dataset walking, support sets, fairness, raw scores, resumable cache."""
import json
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from careg_edge.lab import protocol
from careg_edge.lab.datasets import find_categories, load_category, support_sets
from careg_edge.lab.image_passes import EncoderMemo, memoise_encoder
from careg_edge.lab.protocol import EvalConfig, evaluate
from careg_edge.lab.round_cache import load_round
from careg_edge import imageio
from careg_edge.errors import UserInputError

H, W = 24, 40  # non-square on purpose


def _write_dataset(root, n_train=7):
    rng = np.random.default_rng(0)
    cat = root / "widget"
    for i in range(n_train):
        _save(cat / "train" / "good" / f"{i:03d}.png", rng)
    for i in range(3):
        _save(cat / "test" / "good" / f"g{i}.png", rng)
    for i in range(4):
        m = np.zeros((H, W), np.uint8)
        m[5 + i:10 + i, 8:14 + 2 * i] = 255
        _save(cat / "test" / "scratch" / f"s{i}.jpg", rng, bright=m > 0)
        (cat / "ground_truth" / "scratch").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(cat / "ground_truth" / "scratch" / f"s{i}_mask.png")
    (root / "not_a_category").mkdir()
    return root


def _save(path, rng, bright=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (100 + rng.integers(0, 20, (H, W, 3))).astype(np.uint8)
    if bright is not None:
        a[bright] = 250
    Image.fromarray(a).save(path, quality=98)


@dataclass
class FakeResult:
    score: float
    anomaly_map: np.ndarray
    is_defect: bool
    threshold: float


class FakeProfile:
    """What evaluate reads of a Profile: the threshold and info["calibration"]."""

    def __init__(self, mean, threshold, estimator):
        self.mean, self.threshold, self.estimator = mean, threshold, estimator
        self.tensors = {"mean": mean}
        self.info = {"calibration": {"threshold": threshold, "target_fpr": 0.01}}


def fake_threshold_for(calibration, target):
    """Stand-in for calibration.threshold.threshold_for: the stored threshold at 1 %,
    lower at higher targets, so different targets give different thresholds."""
    return calibration["threshold"] * (0.01 / target) ** 0.5


class FakeInspector:
    """Profile = mean support image; map = |image - mean|; threshold = max support score.
    Every image goes through `runtime.infer` (when one is attached), like the real one."""

    def __init__(self, log):
        self.log = log
        self.enrolled = []
        self.kwargs = []
        self.runtime = None

    def enroll(self, images, estimator, augment, seed, localisation="unwarp", image_score=None,
               prior_exclude=None):
        assert localisation in ("unwarp", "registered")
        assert image_score is not None   # always explicit: a config without one means max
        self.log.append(("enroll", len(images)))
        self.kwargs.append(dict(estimator=estimator, prior_exclude=prior_exclude))
        self.enrolled.append([a.copy() for a in images])
        if self.runtime is not None:
            self.runtime.infer(np.stack(images).astype(np.float32))
        mean = np.mean([a.astype(np.float32) for a in images], axis=0)
        thr = max(self._map(a, mean).max() for a in images) + 1e-3
        return FakeProfile(mean, thr, estimator)

    @staticmethod
    def _map(a, mean):
        return np.abs(a.astype(np.float32) - mean).mean(axis=2)

    def inspect(self, image, profile):
        self.log.append(("inspect", None))
        if self.runtime is not None:
            self.runtime.infer(image[None].astype(np.float32))
        m = self._map(image, profile.mean)
        s = float(m.max())
        return FakeResult(s, m, s > profile.threshold, profile.threshold)


@pytest.fixture
def data(tmp_path):
    return _write_dataset(tmp_path / "data")


def _run(data, out, log, **kw):
    insp = kw.pop("insp", None) or FakeInspector(log)
    kw.setdefault("threshold_for", fake_threshold_for)
    # the tiny dataset has too few goods for the re-calibration arm (its NaN rows would
    # not compare equal); its own tests turn it on
    kw.setdefault("recalibrate", 0)
    doc = evaluate(data, out, [EvalConfig(estimator="fake")], shots=kw.pop("shots", [1, 2]),
                   rounds=kw.pop("rounds", 2), make_inspector=lambda cfg: insp,
                   progress=False, **kw)
    return doc, insp


def test_walker_pairs_masks_and_keeps_jpg(data):
    assert find_categories(data) == ["widget"]
    cat = load_category(data, "widget")
    assert len(cat.train) == 7 and len(cat.test) == 7
    bad = [t for t in cat.test if t.label]
    assert {t.path.suffix for t in bad} == {".jpg"}
    assert all(t.mask.name == f"{t.path.stem}_mask.png" for t in bad)
    assert all(t.mask is None for t in cat.test if not t.label)
    (bad[0].mask).unlink()
    with pytest.raises(UserInputError, match="no mask"):
        load_category(data, "widget")
    with pytest.raises(UserInputError, match="available: widget"):
        load_category(data, "nope")


def test_support_sets_seeded_saved_and_reused(data, tmp_path):
    cat = load_category(data, "widget")
    a = support_sets(cat, [1, 2, 4], 3, 0, tmp_path / "s1")
    b = support_sets(cat, [1, 2, 4], 3, 0, tmp_path / "s2")
    assert a == b  # a pure function of (seed, category, K, round)
    assert all(len(v) == int(k.split("/")[0]) == len(set(v)) for k, v in a.items())
    assert len({tuple(a[f"4/{r}"]) for r in range(3)}) > 1
    saved = json.loads((tmp_path / "s1" / "widget.json").read_text())
    assert saved["sets"] == a
    saved["sets"]["1/0"] = ["006.png"]  # an edited file is what every later run uses
    (tmp_path / "s1" / "widget.json").write_text(json.dumps(saved))
    assert support_sets(cat, [1], 1, 0, tmp_path / "s1")["1/0"] == ["006.png"]
    with pytest.raises(UserInputError, match="only 7"):
        support_sets(cat, [8], 1, 0, tmp_path / "s3")


def test_fairness_support_disjoint_and_no_test_read_before_scoring(data, tmp_path, monkeypatch):
    log = []
    real = imageio.read_image

    def spy(path):
        log.append(("read", str(path)))
        return real(path)

    monkeypatch.setattr(imageio, "read_image", spy)
    doc, insp = _run(data, tmp_path / "out", log)
    first_test = next(i for i, e in enumerate(log) if e[0] == "read" and "/test/" in e[1])
    last_enroll = max(i for i, e in enumerate(log) if e[0] == "enroll")
    first_inspect = next(i for i, e in enumerate(log) if e[0] == "inspect")
    assert last_enroll < first_test < first_inspect
    assert all("/train/good/" in e[1] for e in log[:first_test] if e[0] == "read")
    train = {p.name: real(p) for p in load_category(data, "widget").train}
    for res, images in zip(doc["results"], insp.enrolled):
        assert not set(res["support"]) & {f.split("/")[-1] for f in res["test_files"]}
        # enroll received exactly the support images, nothing else
        assert [np.array_equal(a, train[n]) for a, n in zip(images, res["support"])] == [True] * len(images)
    assert not any("ground_truth" in e[1] for e in log[:first_inspect] if e[0] == "read")


def test_scores_are_raw_and_metrics_match_sklearn(data, tmp_path):
    log = []
    doc, insp = _run(data, tmp_path / "out", log, shots=[2], rounds=1)
    res = doc["results"][0]
    arrays = load_round(tmp_path / "out" / res["cache"])[1]
    cat = load_category(data, "widget")
    prof = insp.enroll([imageio.read_image(data / "widget/train/good" / n) for n in res["support"]],
                       "fake", "auto", 0, image_score="max")
    want = [insp.inspect(imageio.read_image(t.path), prof).score for t in cat.test]
    np.testing.assert_array_equal(arrays["scores"], want)  # no normalisation across the test set
    y = [t.label for t in cat.test]
    assert res["image_auroc"] == pytest.approx(roc_auc_score(y, want), abs=1e-12)
    flagged = np.array(want) > prof.threshold
    assert res["fpr_at_threshold"] == pytest.approx(flagged[np.array(y) == 0].mean())
    assert res["detection_rate_at_threshold"] == pytest.approx(flagged[np.array(y) == 1].mean())
    assert 0.0 <= res["aupro"] <= 1.0 and res["pixel_auroc"] > 0.9  # bright squares on the masks
    assert len(res["worst"]["false_positive"]) == 3 and "false_positive_0" in arrays


def test_resume_skips_cached_rounds_and_chunking_changes_nothing(data, tmp_path):
    log = []
    doc1, _ = _run(data, tmp_path / "out", log)
    assert sum(e[0] == "enroll" for e in log) == 4
    log.clear()
    doc2, _ = _run(data, tmp_path / "out", log)
    assert log == []  # everything came from the cache
    (tmp_path / "out" / doc1["results"][1]["cache"]).unlink()
    doc3, _ = _run(data, tmp_path / "out", log, max_map_bytes=1)  # one round per pass
    assert sum(e[0] == "enroll" for e in log) == 1
    sets = tmp_path / "out/support_sets/widget.json"
    doc = json.loads(sets.read_text())
    doc["sets"]["2/1"] = ["000.png", "006.png"]  # an edited support set invalidates its round only
    sets.write_text(json.dumps(doc))
    log.clear()
    _run(data, tmp_path / "out", log)
    assert sum(e[0] == "enroll" for e in log) == 1
    sets.write_text(json.dumps(json.loads(sets.read_text()) | {"sets": doc["sets"] | {"2/1": doc1["results"][3]["support"]}}))
    log.clear()
    doc3, _ = _run(data, tmp_path / "out", log)  # back to the original set: recomputed, same numbers
    strip = lambda d: [{k: v for k, v in r.items() if k not in ("enroll_s", "infer_ms")} for r in d["results"]]
    assert strip(doc1) == strip(doc2) == strip(doc3)


def test_memo_runtime_encodes_each_image_once():
    calls = []

    class RT:
        def infer(self, b):
            calls.append(1)
            return {"feat1": b * 2}

    class I:
        runtime = RT()

    insp = I()
    memo = memoise_encoder(insp)
    x = np.ones((1, 3, 4, 4), np.float32)
    insp.runtime.infer(x)
    insp.runtime.infer(x.copy())
    assert len(calls) == 1 and memo.misses == 1
    insp.runtime.infer(x + 1)
    assert len(calls) == 2
    insp.runtime.infer(x)          # not only the last batch: an earlier one is still held
    assert len(calls) == 2 and memo.saved_ms >= 0


def test_memo_runtime_lru_is_bounded_by_bytes():
    calls = []

    class RT:
        def infer(self, b):
            calls.append(1)
            return {"feat1": np.zeros(250, np.float32)}   # 1000 bytes per entry

    memo = EncoderMemo(RT(), max_bytes=2500)
    xs = [np.full((1, 1), i, np.float32) for i in range(3)]
    for x in xs:
        memo.infer(x)
    assert len(memo._lru) == 2 and memo._bytes == 2000   # the oldest was evicted
    memo.infer(xs[0])
    assert len(calls) == 4                                # ... so it is encoded again
    memo.infer(xs[2])
    assert len(calls) == 4


def test_report_writes_json_html_and_pngs(data, tmp_path):
    from careg_edge.lab import report
    doc, _ = _run(data, tmp_path / "out", [], shots=[1, 2], rounds=3)
    paths = report.write_report(doc, tmp_path / "out", data)
    got = json.loads(paths["json"].read_text())
    s = got["summary"]["per_category"]["widget"]["fake"]["2"]["image_auroc"]
    rounds = [r["image_auroc"] for r in doc["results"] if r["shots"] == 2]
    assert s[0] == pytest.approx(np.mean(rounds)) and s[1] == pytest.approx(np.std(rounds, ddof=1))
    assert got["summary"]["macro"]["fake"]["2"]["image_auroc"][0] == pytest.approx(s[0])
    page = paths["html"].read_text()
    assert "widget" in page and "figures/widget-fake-curves.png" in page
    assert (tmp_path / "out/figures/widget-fake-worst.png").stat().st_size > 1000
    assert "| fake | 2 | 3 |" in report.markdown_tables(report.summarise(doc["results"]))


def test_cli_eval_with_fake_inspector(data, tmp_path, monkeypatch, capsys):
    from careg_edge.cli import main
    monkeypatch.setattr(protocol, "default_inspector", lambda cfg: FakeInspector([]))
    # the verb builds its Inspectors through the CLI's (global --device, --threads)
    monkeypatch.setattr("careg_edge.cli_context.make_inspector",
                        lambda model=None, backend=None: FakeInspector([]))
    monkeypatch.setattr(evaluate, "__defaults__", tuple(
        FakeInspectorFactory() if callable(d) and getattr(d, "__name__", "") == "default_inspector" else d
        for d in evaluate.__defaults__))
    with pytest.raises(SystemExit) as ok:
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o"), "--shots", "1,2",
              "--rounds", "2", "--estimator", "fake", "--quiet"])
    assert ok.value.code in (0, None)
    out = capsys.readouterr().out
    # the CLI evaluates the library's default image score, and the label says which
    assert "| fake+score-top20% | 1 | 2 |" in out and (tmp_path / "o/report.html").exists()
    # the line table, both default targets, one row per (method, K, target)
    assert "| fake+score-top20% | 2 | 1 % | 2 |" in out and "| fake+score-top20% | 2 | 5 % | 2 |" in out
    got = json.loads((tmp_path / "o/results.json").read_text())
    assert got["targets"] == [0.01, 0.05] and got["command"]["target_fpr"] == [0.01, 0.05]
    with pytest.raises(SystemExit) as bad:
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o"), "--shots", "x"])
    assert bad.value.code == 2
    assert "--shots 'x': give positive integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_t:
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o3"), "--target-fpr", "0.01,5"])
    assert bad_t.value.code == 2 and not (tmp_path / "o3").exists()
    assert "--target-fpr '0.01,5': give false-alarm rates as fractions in (0, 0.5)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as k1:   # refused before any enrollment starts
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o2"), "--shots", "1,2",
              "--augment", "none"])
    assert k1.value.code == 2 and not (tmp_path / "o2").exists()
    assert "drop 1 from --shots or augment" in capsys.readouterr().err
    # the re-calibration arm's rows (too few unseen goods here for 100: n/a with the reason)
    assert "| fake+score-top20%+recal100 | 2 | 1 % | 2 | 0 |" in out
    assert got["recalibrate"] == 100 and got["command"]["recalibrate"] == 100
    with pytest.raises(SystemExit) as bad_n:
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o4"), "--recalibrate", "-1"])
    assert bad_n.value.code == 2 and not (tmp_path / "o4").exists()
    assert "--recalibrate -1: give a number of good images" in capsys.readouterr().err


class FakeInspectorFactory:
    def __call__(self, cfg):
        return FakeInspector([])


def test_validation_good_stands_in_when_test_good_is_missing(data, tmp_path):
    """The partial MVTec LOCO copy has no test/good: validation/good (disjoint from the
    train/good supports) provides the good test images, and results say so."""
    import shutil
    base = data / "widget"
    shutil.move(str(base / "test" / "good"), str(base / "validation" / "good"))
    cat = load_category(data, "widget")
    assert cat.good_source == "validation/good"
    goods = [t for t in cat.test if not t.label]
    assert len(goods) == 3 and all("validation/good" in str(t.path) for t in goods)
    doc, _ = _run(data, tmp_path / "out", [])
    assert {r["good_test_source"] for r in doc["results"]} == {"validation/good"}
    assert all(np.isfinite(r["image_auroc"]) for r in doc["results"])
    train = {p.name for p in cat.train}
    assert all(not set(r["support"]) - train for r in doc["results"])


# --------------------------------------------------------------------------- line metrics
def _add_validation(data, n=2):
    rng = np.random.default_rng(5)
    for i in range(n):
        _save(data / "widget" / "validation" / "good" / f"v{i}.png", rng)


def _expected_unseen(data, support):
    base = data / "widget"
    names = lambda d: {f"{d}/{p.name}" for p in (base / d).iterdir()} if (base / d).is_dir() else set()
    return (names("train/good") - {f"train/good/{n}" for n in support}) | names("test/good") \
        | names("validation/good")


def test_unseen_good_set_is_train_minus_support_plus_test_and_validation_good(data, tmp_path):
    _add_validation(data)
    doc, _ = _run(data, tmp_path / "out", [], shots=[1, 2, 4], rounds=2)
    for res in doc["results"]:
        files = res["unseen_files"]
        assert len(files) == len(set(files)) == res["n_unseen_good"]
        assert set(files) == _expected_unseen(data, res["support"])
        assert not {f.split("/")[-1] for f in files if f.startswith("train/")} & set(res["support"])
        assert res["unseen_good_sources"] == {"train/good": 7 - res["shots"], "test/good": 3,
                                              "validation/good": 2}
        # the paper metrics keep their test set: validation/good is not in it
        assert res["n_test"] == 7 and not any("validation" in f for f in res["test_files"])


def test_unseen_good_with_validation_standing_in_for_test_good(data, tmp_path):
    """No test/good (the partial LOCO copy): validation/good is counted once."""
    import shutil
    base = data / "widget"
    shutil.move(str(base / "test" / "good"), str(base / "validation" / "good"))
    doc, _ = _run(data, tmp_path / "out", [], shots=[2], rounds=1)
    res = doc["results"][0]
    assert set(res["unseen_files"]) == _expected_unseen(data, res["support"])
    assert res["unseen_good_sources"] == {"train/good": 5, "validation/good": 3}
    assert res["n_unseen_good"] == 8


def test_line_metrics_recomputed_from_stored_scores_and_sklearn(data, tmp_path):
    from sklearn.metrics import roc_curve
    _add_validation(data)
    doc, insp = _run(data, tmp_path / "out", [], shots=[1, 2], rounds=2, targets=[0.05, 0.2])
    for res in doc["results"]:
        arrays = load_round(tmp_path / "out" / res["cache"])[1]
        # the stored unseen scores are the scores of exactly those files (fresh recomputation)
        prof = insp.enroll([imageio.read_image(data / "widget/train/good" / n) for n in res["support"]],
                           "fake", "auto", 0, image_score="max")
        want = [insp.inspect(imageio.read_image(data / "widget" / f), prof).score
                for f in res["unseen_files"]]
        np.testing.assert_array_equal(arrays["unseen_scores"], want)
        good, bad = np.array(want), arrays["scores"][arrays["labels"] == 1]
        assert [row["target_fpr"] for row in res["line"]] == [0.05, 0.2]
        for row in res["line"]:
            thr = fake_threshold_for(res["calibration"], row["target_fpr"])
            assert row["threshold"] == pytest.approx(thr) and row["error"] is None
            assert row["fpr"] == pytest.approx(np.mean(good > thr))
            assert row["n_false_alarms"] == int(np.sum(good > thr))
            assert row["detection"] == pytest.approx(np.mean(bad > thr))
            assert row["fpr_ratio"] == pytest.approx(row["fpr"] / row["target_fpr"])
            # ROC reference: scikit-learn, the largest TPR at FPR <= target
            f, t, _ = roc_curve(np.r_[np.zeros(good.size), np.ones(bad.size)], np.r_[good, bad],
                                drop_intermediate=False)
            ref = t[f <= row["target_fpr"] + 1e-12].max()
            assert row["roc_detection"] == pytest.approx(ref)
            assert row["gap_points"] == pytest.approx(100 * (ref - row["detection"]))
        own = res["line_own_threshold"]
        assert own["threshold"] == res["threshold"] == pytest.approx(res["calibration"]["threshold"])
        assert res["unseen_fpr_at_threshold"] == pytest.approx(np.mean(good > res["threshold"]))


def test_several_targets_from_one_enrollment_and_added_later_from_the_cache(data, tmp_path):
    log, calls = [], []

    def spy(calib, t):
        calls.append(t)
        return fake_threshold_for(calib, t)

    doc, _ = _run(data, tmp_path / "out", log, shots=[1, 2], rounds=2, targets=[0.01, 0.05, 0.2],
                  threshold_for=spy)
    assert sum(e[0] == "enroll" for e in log) == 4        # 2 K x 2 rounds, not x 3 targets
    assert sorted(calls) == sorted([0.01, 0.05, 0.2] * 4)
    thr = {r["cache"]: [row["threshold"] for row in r["line"]] for r in doc["results"]}
    assert all(a > b > c for a, b, c in thr.values())
    log.clear(), calls.clear()
    doc2, _ = _run(data, tmp_path / "out", log, shots=[1, 2], rounds=2, targets=[0.05, 0.1],
                   threshold_for=spy)
    assert log == [] and calls == [0.1] * 4           # from the cached scores and calibration
    assert all([row["target_fpr"] for row in r["line"]] == [0.05, 0.1] for r in doc2["results"])
    assert doc2["targets"] == [0.05, 0.1]


def test_threshold_for_failure_is_recorded_not_fatal(data, tmp_path):
    def picky(calib, t):
        if t > 0.1:
            raise ValueError("tail fit cannot reach 20 %")
        return fake_threshold_for(calib, t)

    doc, _ = _run(data, tmp_path / "out", [], shots=[2], rounds=1, targets=[0.05, 0.2],
                  threshold_for=picky)
    ok, bad = doc["results"][0]["line"]
    assert ok["error"] is None and np.isfinite(ok["fpr"])
    assert bad["error"] == "ValueError: tail fit cannot reach 20 %"
    assert np.isnan(bad["threshold"]) and np.isnan(bad["fpr"]) and np.isnan(bad["detection"])
    assert np.isfinite(bad["roc_detection"])   # the ROC does not need a threshold
    from careg_edge.lab import report
    s = report.summarise(doc["results"])
    cell = s["line"]["widget"]["fake"]["2"]["0.2"]
    assert cell["check"]["verdict"] == "n/a" and cell["errors"] == ["ValueError: tail fit cannot reach 20 %"]
    assert "threshold error: ValueError" in report.markdown_tables(s)


def test_enroll_gets_prior_exclude_of_the_evaluated_category(data, tmp_path):
    doc, insp = _run(data, tmp_path / "out", [], shots=[1], rounds=2)
    assert [kw["prior_exclude"] for kw in insp.kwargs] == [("widget",)] * 2
    for res in doc["results"]:
        assert res["enroll_kwargs"]["prior_exclude"] == ["widget"]
        assert res["config"]["exclude_own_category"] is True
    cfg = EvalConfig(exclude_own_category=False)
    assert "prior_exclude" not in cfg.enroll_kwargs("widget")
    assert cfg.key() != EvalConfig().key()   # a different profile, a different cache file


def test_each_image_is_encoded_once_per_pass(data, tmp_path):
    """Test images and the other good images are read once and encoded once, whatever
    the number of profiles that score them."""
    _add_validation(data)
    from collections import Counter
    encoded = Counter()

    class RT:
        def infer(self, batch):
            if batch.shape[0] == 1:
                encoded[batch.tobytes()] += 1
            return {"feat1": batch}

    insp = FakeInspector([])
    insp.runtime = RT()
    reads = Counter()
    real = imageio.read_image

    def spy(path):
        reads[str(path)] += 1
        return real(path)

    from careg_edge.lab import image_passes as mod
    orig = mod.imageio.read_image
    mod.imageio.read_image = spy
    try:
        doc, _ = _run(data, tmp_path / "out", [], shots=[1, 2, 4], rounds=2, insp=insp)
    finally:
        mod.imageio.read_image = orig
    assert len(doc["results"]) == 6
    assert set(encoded.values()) == {1}
    cat = load_category(data, "widget")
    assert len(encoded) == len(cat.test) + len(cat.extra_good) + sum(
        any(p.name not in r["support"] for r in doc["results"]) for p in cat.train)
    non_support = [p for p in reads if "/test/" in p or "/validation/" in p]
    assert all(reads[p] == 1 for p in non_support)


def test_line_verdict_against_the_issue_targets():
    from careg_edge.lab.line_metrics import verdict
    assert verdict(2, 0.05, 0.09, 5.0, 3)["verdict"] == "pass"
    assert verdict(2, 0.05, 0.11, 5.0, 3)["problems"] == ["FPR 2.2x > 2x target"]
    assert verdict(2, 0.05, 0.01, 5.0, 3)["problems"] == ["FPR 0.20x < 1/4 target"]
    assert verdict(2, 0.01, 0.0, 5.0, 3)["pass"]            # no floor at 1 %
    assert verdict(1, 0.01, 0.039, 5.0, 3)["pass"] and not verdict(1, 0.01, 0.041, 5.0, 3)["pass"]
    assert verdict(4, 0.01, 0.01, 12.0, 3)["problems"] == ["gap 12.0 > 10 pts"]
    assert "only 1 round" in verdict(2, 0.01, 0.01, 0.0, 1)["verdict"]
    assert verdict(2, 0.01, float("nan"), 0.0, 0)["verdict"] == "n/a"


def test_report_line_table_means_over_rounds(data, tmp_path):
    from careg_edge.lab import report
    doc, _ = _run(data, tmp_path / "out", [], shots=[2], rounds=3, targets=[0.05, 0.2])
    paths = report.write_report(doc, tmp_path / "out", data)
    got = json.loads(paths["json"].read_text())
    cell = got["summary"]["line"]["widget"]["fake"]["2"]["0.2"]
    rows = [row for r in doc["results"] for row in r["line"] if row["target_fpr"] == 0.2]
    for m in ("fpr", "detection", "roc_detection", "gap_points", "fpr_ratio"):
        assert cell[m][0] == pytest.approx(np.mean([row[m] for row in rows])) and cell[m][2] == 3
    assert cell["n_unseen_good"][0] == 8   # 7 - 2 train + 3 test/good
    from careg_edge.lab.line_metrics import verdict
    assert cell["check"] == verdict(2, 0.2, cell["fpr"][0], cell["gap_points"][0], 3)
    table = report.markdown_tables(report.summarise(doc["results"]))
    line = next(ln for ln in table.splitlines() if ln.startswith("| fake | 2 | 20 % |"))
    assert line.endswith(f"| {cell['check']['verdict']} |") and "| 3 | 8 |" in line
    page = paths["html"].read_text()
    assert "widget: line metrics" in page and cell["check"]["verdict"].split(":")[0] in page


@pytest.mark.slow
def test_real_inspector_road_on_the_bundled_flange(tmp_path):
    """Inspector.enroll -> profile.info["calibration"] -> threshold_for, for real (bundled
    encoder, bundled flange, ~10 s): the keyword reaches enroll, every target gets a
    threshold, and the re-derived one at the profile's own target is the profile's."""
    from pathlib import Path
    import careg_edge
    demo = Path(careg_edge.__file__).parent / "demo_data"
    doc = evaluate(demo, tmp_path, [EvalConfig(estimator="padim", augment="none")], [2], 1,
                   progress=False)
    r = doc["results"][0]
    assert r["enroll_kwargs"]["prior_exclude"] == ["flange"]
    assert r["unseen_good_sources"] == {"train/good": 8, "test/good": 4} and r["n_unseen_good"] == 12
    assert [row["error"] for row in r["line"]] == [None, None]
    own = next(row for row in r["line"] if row["target_fpr"] == r["calibration"]["target_fpr"])
    assert own["threshold"] == pytest.approx(r["threshold"], rel=1e-5)


def test_memory_budgets_change_passes_not_results(data, tmp_path, monkeypatch):
    """Maps that fit one round at a time: the test set is read once per round, the other
    good images still once for all (profiles are grouped by their own budget); profiles
    that fit one at a time: everything once per round. Same numbers; and the encoder
    memo still encodes each image once (these images are tiny, it holds them all)."""
    _add_validation(data)
    from collections import Counter
    real = imageio.read_image
    runs = {}
    for name, kw in {"roomy": {}, "maps": {"max_map_bytes": 1}, "profiles": {"max_profile_bytes": 1}}.items():
        reads, encoded = Counter(), Counter()

        def spy(path):
            reads[str(path)] += 1
            return real(path)

        class RT:
            def infer(self, batch):
                encoded[batch.tobytes()] += 1
                return {"feat1": batch}

        monkeypatch.setattr(imageio, "read_image", spy)
        insp = FakeInspector([])
        insp.runtime = RT()
        doc, _ = _run(data, tmp_path / name, [], shots=[1, 2], rounds=2, insp=insp, **kw)
        test = Counter(v for p, v in reads.items() if "/test/" in p)
        other = Counter(v for p, v in reads.items() if "/validation/" in p)
        runs[name] = (doc, test, other, set(encoded.values()))
    assert runs["roomy"][1:] == ({1: 7}, {1: 2}, {1})
    assert runs["maps"][1:] == ({4: 7}, {1: 2}, {1})          # 4 rounds, 4 test passes
    assert runs["profiles"][1:] == ({4: 7}, {4: 2}, {1})
    strip = lambda d: [{k: v for k, v in r.items() if k not in ("enroll_s", "infer_ms", "cache")}
                       for r in d["results"]]
    assert strip(runs["roomy"][0]) == strip(runs["maps"][0]) == strip(runs["profiles"][0])


# --------------------------------------------------------------------------- re-calibration arm
@pytest.fixture
def big_data(tmp_path):
    # enough good images for threshold_from_good (20 at least) and some left to measure on
    return _write_dataset(tmp_path / "big", n_train=40)


def test_recalibration_draws_n_unseen_goods_and_measures_on_the_rest(big_data, tmp_path):
    from sklearn.metrics import roc_curve
    from careg_edge.calibration.threshold import threshold_from_good
    from careg_edge.lab import report
    doc, _ = _run(big_data, tmp_path / "out", [], shots=[2], rounds=3, targets=[0.05, 0.2],
                  recalibrate=25)
    draws = []
    for res in doc["results"]:
        rc = res["recalibration"]
        arrays = load_round(tmp_path / "out" / res["cache"])[1]
        unseen = arrays["unseen_scores"]
        idx = np.array(rc["calibration_idx"])
        assert rc["n"] == 25 and idx.size == len(set(idx.tolist())) == 25
        files = np.array(res["unseen_files"])
        calib = set(files[idx])
        rest = np.setdiff1d(np.arange(unseen.size), idx)
        assert rc["n_measured"] == rest.size == res["n_unseen_good"] - 25 == 16
        assert not calib & set(files[rest])                                   # disjoint
        assert not {f.split("/")[-1] for f in calib if f.startswith("train/")} & set(res["support"])
        draws.append(tuple(idx))
        good, bad = unseen[rest], arrays["scores"][arrays["labels"] == 1]
        for row in rc["rows"]:
            want = threshold_from_good(unseen[idx], row["target_fpr"])
            assert row["error"] is None and row["threshold"] == want["threshold"]
            assert row["method"] == want["method"]
            assert row["fpr"] == pytest.approx(np.mean(good > want["threshold"]))
            assert row["detection"] == pytest.approx(np.mean(bad > want["threshold"]))
            f, t, _ = roc_curve(np.r_[np.zeros(good.size), np.ones(bad.size)], np.r_[good, bad],
                                drop_intermediate=False)
            ref = t[f <= row["target_fpr"] + 1e-12].max()
            assert row["roc_detection"] == pytest.approx(ref)
            assert row["gap_points"] == pytest.approx(100 * (ref - row["detection"]))
    assert len(set(draws)) == 3                                # a different draw per round
    again, _ = _run(big_data, tmp_path / "out", [], shots=[2], rounds=3, targets=[0.05, 0.2],
                    recalibrate=25)
    assert [r["recalibration"] for r in again["results"]] == [r["recalibration"] for r in doc["results"]]
    s = report.summarise(doc["results"])
    cell = s["line"]["widget"]["fake+recal25"]["2"]["0.2"]
    rows = [row for r in doc["results"] for row in r["recalibration"]["rows"] if row["target_fpr"] == 0.2]
    assert cell["fpr"][0] == pytest.approx(np.mean([row["fpr"] for row in rows])) and cell["rounds"] == 3
    assert cell["n_unseen_good"][0] == 16
    assert any(ln.startswith("| fake+recal25 | 2 | 20 % | 3 | 16 |")
               for ln in report.markdown_tables(s).splitlines())


def test_recalibration_with_too_many_or_too_few_images_is_nan_with_the_reason(big_data, tmp_path):
    from careg_edge.lab import report
    for n, msg in [(41, "the round has 41 unseen good images"),   # 40 - 2 + 3: none left
                   (10, "NotEnoughGood: ")]:                        # threshold_from_good needs 20
        doc, _ = _run(big_data, tmp_path / "out", [], shots=[2], rounds=1, targets=[0.05],
                      recalibrate=n)
        row = doc["results"][0]["recalibration"]["rows"][0]
        assert msg in row["error"] and np.isnan(row["threshold"]) and np.isnan(row["fpr"])
        cell = report.summarise(doc["results"])["line"]["widget"][f"fake+recal{n}"]["2"]["0.05"]
        assert cell["check"]["verdict"] == "n/a" and msg in cell["errors"][0]
    assert "at least 20" in row["error"]


def test_new_recalibrate_value_on_a_finished_folder_enrolls_nothing(big_data, tmp_path):
    log = []
    doc, _ = _run(big_data, tmp_path / "out", log, shots=[1, 2], rounds=2, recalibrate=0)
    assert sum(e[0] == "enroll" for e in log) == 4
    assert all("recalibration" not in r for r in doc["results"])
    log.clear()
    doc2, _ = _run(big_data, tmp_path / "out", log, shots=[1, 2], rounds=2, recalibrate=30)
    assert log == []                                           # no enrollment, no scoring
    assert all(r["recalibration"]["n"] == 30 and r["recalibration"]["rows"][0]["error"] is None
               for r in doc2["results"])
    assert doc2["recalibrate"] == 30
