"""The evaluation protocol on a tiny synthetic MVTec-layout dataset with a fake
Inspector: dataset walking, support sets, fairness, raw scores, resumable cache."""
import json
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from careg_edge import evaluate as ev
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
    doc = ev.evaluate(data, out, [ev.EvalConfig(estimator="fake")], shots=kw.pop("shots", [1, 2]),
                      rounds=kw.pop("rounds", 2), make_inspector=lambda cfg: insp,
                      progress=False, **kw)
    return doc, insp


def test_walker_pairs_masks_and_keeps_jpg(data):
    assert ev.find_categories(data) == ["widget"]
    cat = ev.load_category(data, "widget")
    assert len(cat.train) == 7 and len(cat.test) == 7
    bad = [t for t in cat.test if t.label]
    assert {t.path.suffix for t in bad} == {".jpg"}
    assert all(t.mask.name == f"{t.path.stem}_mask.png" for t in bad)
    assert all(t.mask is None for t in cat.test if not t.label)
    (bad[0].mask).unlink()
    with pytest.raises(UserInputError, match="no mask"):
        ev.load_category(data, "widget")
    with pytest.raises(UserInputError, match="available: widget"):
        ev.load_category(data, "nope")


def test_support_sets_seeded_saved_and_reused(data, tmp_path):
    cat = ev.load_category(data, "widget")
    a = ev.support_sets(cat, [1, 2, 4], 3, 0, tmp_path / "s1")
    b = ev.support_sets(cat, [1, 2, 4], 3, 0, tmp_path / "s2")
    assert a == b  # a pure function of (seed, category, K, round)
    assert all(len(v) == int(k.split("/")[0]) == len(set(v)) for k, v in a.items())
    assert len({tuple(a[f"4/{r}"]) for r in range(3)}) > 1
    saved = json.loads((tmp_path / "s1" / "widget.json").read_text())
    assert saved["sets"] == a
    saved["sets"]["1/0"] = ["006.png"]  # an edited file is what every later run uses
    (tmp_path / "s1" / "widget.json").write_text(json.dumps(saved))
    assert ev.support_sets(cat, [1], 1, 0, tmp_path / "s1")["1/0"] == ["006.png"]
    with pytest.raises(UserInputError, match="only 7"):
        ev.support_sets(cat, [8], 1, 0, tmp_path / "s3")


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
    train = {p.name: real(p) for p in ev.load_category(data, "widget").train}
    for res, images in zip(doc["results"], insp.enrolled):
        assert not set(res["support"]) & {f.split("/")[-1] for f in res["test_files"]}
        # enroll received exactly the support images, nothing else
        assert [np.array_equal(a, train[n]) for a, n in zip(images, res["support"])] == [True] * len(images)
    assert not any("ground_truth" in e[1] for e in log[:first_inspect] if e[0] == "read")


def test_scores_are_raw_and_metrics_match_sklearn(data, tmp_path):
    log = []
    doc, insp = _run(data, tmp_path / "out", log, shots=[2], rounds=1)
    res = doc["results"][0]
    arrays = ev.load_round(tmp_path / "out" / res["cache"])[1]
    cat = ev.load_category(data, "widget")
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
    memo = ev.memoise_encoder(insp)
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

    memo = ev._MemoRuntime(RT(), max_bytes=2500)
    xs = [np.full((1, 1), i, np.float32) for i in range(3)]
    for x in xs:
        memo.infer(x)
    assert len(memo._lru) == 2 and memo._bytes == 2000   # the oldest was evicted
    memo.infer(xs[0])
    assert len(calls) == 4                                # ... so it is encoded again
    memo.infer(xs[2])
    assert len(calls) == 4


def test_report_writes_json_html_and_pngs(data, tmp_path):
    from careg_edge import report
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
    monkeypatch.setattr(ev, "default_inspector", lambda cfg: FakeInspector([]))
    monkeypatch.setattr(ev.evaluate, "__defaults__", tuple(
        FakeInspectorFactory() if callable(d) and getattr(d, "__name__", "") == "default_inspector" else d
        for d in ev.evaluate.__defaults__))
    with pytest.raises(SystemExit) as ok:
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o"), "--shots", "1,2",
              "--rounds", "2", "--estimator", "fake", "--quiet"])
    assert ok.value.code in (0, None)
    out = capsys.readouterr().out
    # the CLI evaluates the library's default image score, and the label says which
    assert "| fake+score-top20% | 1 | 2 |" in out and (tmp_path / "o/report.html").exists()
    with pytest.raises(SystemExit) as bad:
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o"), "--shots", "x"])
    assert bad.value.code == 2
    assert "--shots 'x': give positive integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as k1:   # refused before any enrollment starts
        main(["eval", "--data", str(data), "-o", str(tmp_path / "o2"), "--shots", "1,2",
              "--augment", "none"])
    assert k1.value.code == 2 and not (tmp_path / "o2").exists()
    assert "drop 1 from --shots or augment" in capsys.readouterr().err


class FakeInspectorFactory:
    def __call__(self, cfg):
        return FakeInspector([])


def test_validation_good_stands_in_when_test_good_is_missing(data, tmp_path):
    """The partial MVTec LOCO copy has no test/good: validation/good (disjoint from the
    train/good supports) provides the good test images, and results say so."""
    import shutil
    base = data / "widget"
    shutil.move(str(base / "test" / "good"), str(base / "validation" / "good"))
    cat = ev.load_category(data, "widget")
    assert cat.good_source == "validation/good"
    goods = [t for t in cat.test if not t.label]
    assert len(goods) == 3 and all("validation/good" in str(t.path) for t in goods)
    doc, _ = _run(data, tmp_path / "out", [])
    assert {r["good_test_source"] for r in doc["results"]} == {"validation/good"}
    assert all(np.isfinite(r["image_auroc"]) for r in doc["results"])
    train = {p.name for p in cat.train}
    assert all(not set(r["support"]) - train for r in doc["results"])
