"""The embeddable library without Python: C API, C example, find_package, sanitizers.

One CMake build (AddressSanitizer + UBSan, static library only so it compiles
in about a minute on 2 cores) serves every test here; profiles are written with
careg_edge.container using the documented tensor names.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from careg_edge import _core, scoring
from careg_edge.container import write_container
from careg_edge.errors import BadHeader
from careg_edge.profile import Profile
from tests import reference as ref

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # one C++ build, ~1 min on 2 idle cores


def _cmake():
    exe = shutil.which("cmake") or str(Path(sys.executable).with_name("cmake"))
    return exe if Path(exe).exists() or shutil.which(exe) else None


def _sanitizers_work(tmp):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        return False
    src = tmp / "probe.cpp"
    src.write_text("int main() { return 0; }\n")
    r = subprocess.run([cxx, "-fsanitize=address,undefined", str(src), "-o", str(tmp / "probe")],
                       capture_output=True)
    return r.returncode == 0 and subprocess.run([str(tmp / "probe")]).returncode == 0


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("careg_core")
    cmake = _cmake()
    if cmake is None:
        pytest.skip("cmake is not installed")
    if not _sanitizers_work(tmp):
        pytest.skip("the C++ compiler lacks -fsanitize=address,undefined")
    bdir, prefix = tmp / "build", tmp / "prefix"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    cfg = [cmake, "-S", str(REPO), "-B", str(bdir), *gen, "-DCAREG_SANITIZE=ON", "-DCAREG_PYTHON=OFF",
           "-DCAREG_BUILD_TESTS=ON", "-DCAREG_SHARED=OFF", "-DCMAKE_BUILD_TYPE=Release",
           "-DCMAKE_CXX_FLAGS_RELEASE=-O1", "-DCMAKE_C_FLAGS_RELEASE=-O1",
           f"-DCMAKE_INSTALL_PREFIX={prefix}"]
    for cmd in (cfg, [cmake, "--build", str(bdir), "-j2"], [cmake, "--install", str(bdir)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "warning:" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    return {"dir": bdir, "prefix": prefix, "cmake": cmake, "tmp": tmp, "gen": gen}


META = dict(threshold="3.0", grid_h="6", grid_w="5", image_h="24", image_w="20", sigma="1.0",
            encoder_hash="0" * 64, profile="{}")


def _meta(estimator, rule):
    """META as an older profile (no rule key) or, with `rule`, as the writer puts it:
    flat `image_score` and the same value in the profile JSON."""
    if rule is None:
        return dict(META, estimator=estimator)
    return dict(META, estimator=estimator, image_score=rule, profile=json.dumps({"image_score": rule}))


def write_padim(path, f16=True, seed=0, D=8, rule=None):
    rng = np.random.default_rng(seed)
    P = 30
    L = np.tril(rng.normal(scale=0.1, size=(P, D, D)))
    L[:, range(D), range(D)] = 1.0
    factor = ref.pack_factor(L)
    tensors = {"mean": rng.normal(size=(P, D)).astype(np.float32),
               "precision_factor": factor.astype(np.float16) if f16 else factor,
               "channel_index": np.arange(D, dtype=np.int64)}
    write_container(path, tensors, _meta("padim", rule), "careg-profile", 1)
    return tensors


def write_patchcore(path, seed=0, D=6, M=40, rule=None):
    rng = np.random.default_rng(seed)
    tensors = {"bank": rng.normal(size=(M, D)).astype(np.float32),
               "bank_pos": rng.integers(0, 30, size=M).astype(np.int32)}
    write_container(path, tensors, _meta("patchcore", rule), "careg-profile", 1)
    return tensors


def run(exe, *args):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("kind", ["padim-f16", "padim-f32", "patchcore", "padim-top10%", "patchcore-mean"])
def test_sanitized_program_parity_threads_and_fuzz(build, tmp_path, kind):
    """The rule kinds run the top-P % statistic under ASan/UBSan from 4 threads, and
    the fuzzer rewrites the digits of `image_score` (top00% must be refused)."""
    path = tmp_path / "p.careg"
    rule = kind.split("-")[1] if kind.endswith(("%", "mean")) else None
    if kind.startswith("patchcore"):
        write_patchcore(path, rule=rule)
    else:
        write_padim(path, f16=kind.endswith("f16"), rule=rule)
    r = run(build["dir"] / "careg_core_test", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 concurrent scorers identical" in r.stdout
    assert f"image_score: {rule or 'max'}\n" in r.stdout
    fuzz = [line for line in r.stdout.splitlines() if line.startswith("fuzz:")][0]
    assert int(fuzz.split()[1]) > 3000 and r.stdout.strip().endswith("OK")


def score_example(build, profile_path, x, theta_inv, tmp_path):
    """Run the C example program on features x and theta_inv; (scores, decisions)."""
    x.tofile(tmp_path / "x.f32")
    theta_inv.tofile(tmp_path / "t.f32")
    r = run(build["dir"] / "careg_score_example", profile_path, tmp_path / "x.f32", tmp_path / "t.f32", 2)
    assert r.returncode == 0, r.stderr
    return parse(r.stdout)


def expected_scores(tensors, x, theta_inv, estimator):
    """Max rule: the map maximum (PaDiM) or PatchCore's Eq. 7 re-weighted maximum
    (defaults search=global, reweight_k=9: these profiles carry no estimator_params)."""
    if estimator == "padim":
        dist = ref.mahalanobis(x, tensors["mean"], tensors["precision_factor"])
        _, score = ref.anomaly_map(dist.reshape(-1, 6, 5), theta_inv, 24, 20, 1.0)
        return score
    dist, nn = ref.nearest(x.astype(np.float64), tensors["bank"], tensors["bank_pos"], (6, 5), "global", 2)
    return ref.reweighted(x.astype(np.float64), dist, nn, tensors["bank"], 9)


def parse(stdout):
    rows = [line.split() for line in stdout.splitlines() if line.startswith("image ")]
    return np.array([float(r[3]) for r in rows], np.float32), [r[-1] for r in rows]


@pytest.mark.parametrize("estimator", ["padim", "patchcore"])
def test_c_example_prints_score_and_decision(build, tmp_path, estimator):
    path = tmp_path / "p.careg"
    tensors = write_padim(path) if estimator == "padim" else write_patchcore(path)
    D = 8 if estimator == "padim" else 6
    rng = np.random.default_rng(3)
    # near the profile (mean / a bank row) -> OK, far from it -> DEFECT
    base = tensors["mean"] if estimator == "padim" else tensors["bank"][rng.integers(0, 40, 30)]
    scale = np.array([0.05, 1.0, 3.0], np.float32)[:, None, None]
    x = (base + scale * rng.normal(size=(3, 30, D))).astype(np.float32)
    theta_inv = np.tile(np.array([[0.9, -0.2, 0.05], [0.2, 0.9, -0.1]], np.float32), (3, 1, 1))
    scores, decisions = score_example(build, path, x, theta_inv, tmp_path)
    want = expected_scores(tensors, x, theta_inv, estimator)
    np.testing.assert_allclose(scores, want, rtol=1e-4)
    assert decisions == ["DEFECT" if s > 3.0 else "OK" for s in want]
    assert len(set(decisions)) == 2  # the inputs were scaled so both outcomes occur


def test_c_example_refuses_bad_inputs(build, tmp_path):
    path = tmp_path / "p.careg"
    write_padim(path)
    np.zeros(7, np.float32).tofile(tmp_path / "x.f32")
    r = run(build["dir"] / "careg_score_example", path, tmp_path / "x.f32")
    assert r.returncode == 1 and "expected raw float32" in r.stderr
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    (tmp_path / "bad.careg").write_bytes(bytes(raw))
    np.zeros((1, 30, 8), np.float32).tofile(tmp_path / "x.f32")
    r = run(build["dir"] / "careg_score_example", tmp_path / "bad.careg", tmp_path / "x.f32")
    assert r.returncode == 1 and "checksum mismatch" in r.stderr
    x = np.zeros((2, 30, 8), np.float32)
    x[1, 4, 2] = np.nan
    x.tofile(tmp_path / "x.f32")
    r = run(build["dir"] / "careg_score_example", path, tmp_path / "x.f32")
    assert r.returncode == 1 and "features[1]: 1 non-finite value(s)" in r.stderr, r.stdout + r.stderr


def test_find_package_from_another_project(build, tmp_path):
    """An outside CMake project finds the installed package and builds the example."""
    proj = tmp_path / "consumer"
    proj.mkdir()
    shutil.copy(REPO / "cpp" / "examples" / "score.c", proj / "score.c")
    (proj / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(consumer C CXX)\n"
        "find_package(careg_core 0.1 REQUIRED)\nadd_executable(score score.c)\n"
        "target_link_libraries(score PRIVATE careg::core_static)\n"
        "set_target_properties(score PROPERTIES LINKER_LANGUAGE CXX)\n")
    cmake = build["cmake"]
    for cmd in ([cmake, "-S", str(proj), "-B", str(proj / "b"), *build["gen"],
                 f"-DCMAKE_PREFIX_PATH={build['prefix']}"], [cmake, "--build", str(proj / "b")]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    path = tmp_path / "p.careg"
    write_padim(path)
    np.ones((2, 30, 8), np.float32).tofile(tmp_path / "x.f32")
    mine = run(proj / "b" / "score", path, tmp_path / "x.f32")
    theirs = run(build["dir"] / "careg_score_example", path, tmp_path / "x.f32")
    assert mine.returncode == 0 and mine.stdout == theirs.stdout
    assert (build["prefix"] / "include" / "careg_c.h").exists()


def test_python_core_agrees_with_c_api_scores(build, tmp_path):
    """The C path and the Python binding are the same kernels: same numbers."""
    path = tmp_path / "p.careg"
    t = write_padim(path, f16=False)
    x = np.random.default_rng(9).normal(size=(2, 30, 8)).astype(np.float32)
    x.tofile(tmp_path / "x.f32")
    scores, _ = parse(run(build["dir"] / "careg_score_example", path, tmp_path / "x.f32").stdout)
    dist = _core.mahalanobis(x, t["mean"], t["precision_factor"])
    _, want = _core.anomaly_map(dist.reshape(2, 6, 5), None, 24, 20, 1.0)
    np.testing.assert_allclose(scores, want, rtol=1e-5)


def top_mean(maps, percent):
    """NumPy reference of a rule: mean of the n = max(1, round(H*W*P/100)) largest
    values of each map, by a full sort (Python's round: ties to even)."""
    flat = np.sort(maps.reshape(len(maps), -1).astype(np.float64), axis=1)
    n = max(1, round(flat.shape[1] * percent / 100))
    return flat[:, -n:].mean(axis=1)


# P = 0.9375 % of the 24x20 map is exactly 4.5 values: round half to even keeps 4.
RULES = [(None, None), ("max", None), ("mean", 100.0), ("top10%", 10.0), ("top100%", 100.0),
         ("top12.5%", 12.5), ("top0.9375%", 0.9375)]


@pytest.mark.parametrize("estimator", ["padim", "patchcore"])
@pytest.mark.parametrize("rule,percent", RULES)
def test_c_api_scores_by_the_profile_image_score_rule(build, tmp_path, estimator, rule, percent):
    """careg_score's image score is the profile's rule on the map: the C example and
    the NumPy reference (sorted map) agree for max (with and without the key: older
    profiles), mean and top<P>%; Python's own rule code agrees too."""
    path = tmp_path / "p.careg"
    tensors = (write_padim if estimator == "padim" else write_patchcore)(path, rule=rule)
    D = 8 if estimator == "padim" else 6
    rng = np.random.default_rng(5)
    x = rng.normal(scale=1.5, size=(3, 30, D)).astype(np.float32)
    theta_inv = np.tile(np.array([[0.9, -0.2, 0.05], [0.2, 0.9, -0.1]], np.float32), (3, 1, 1))
    scores, decisions = score_example(build, path, x, theta_inv, tmp_path)
    if estimator == "padim":
        dist = ref.mahalanobis(x, tensors["mean"], tensors["precision_factor"])
    else:
        dist = np.sqrt(ref.knn(x.reshape(-1, D), tensors["bank"], 1)[0]).reshape(3, 30)
    maps, mx = ref.anomaly_map(dist.reshape(-1, 6, 5), theta_inv, 24, 20, 1.0)
    want = top_mean(maps, percent) if percent is not None else \
        expected_scores(tensors, x, theta_inv, estimator)
    np.testing.assert_allclose(scores, want, rtol=1e-5)
    assert decisions == ["DEFECT" if s > 3.0 else "OK" for s in scores]
    if percent is not None:  # a rule that is not max really changes the score
        assert np.all(scores < mx)
        np.testing.assert_allclose(scores, ref.image_score(maps, rule), rtol=1e-5)
        assert Profile.load(path).image_score == rule
        # Python's binding runs the same scorer: same numbers
        prof = Profile.load(path)
        sc = scoring.scorer(prof.estimator, prof.tensors, {}, prof.grid, prof.image_size, prof.sigma, rule)
        np.testing.assert_allclose(_core.score(sc, x, theta_inv)["scores"], scores, rtol=1e-6)


@pytest.mark.parametrize("bad", ["top0%", "median", "top101%", "top 20%", "top1e1%", "top20", "TOP20%"])
def test_unknown_image_score_refused_by_both_readers(build, tmp_path, bad):
    path = tmp_path / "bad.careg"
    write_padim(path, rule=bad)
    np.zeros((1, 30, 8), np.float32).tofile(tmp_path / "x.f32")
    r = run(build["dir"] / "careg_score_example", path, tmp_path / "x.f32")
    assert r.returncode == 1 and "cannot load profile" in r.stderr, r.stdout + r.stderr
    assert f"metadata 'image_score' is '{bad}'" in r.stderr and "re-enroll" in r.stderr
    with pytest.raises(BadHeader, match=re.escape(f"'image_score' is '{bad}'") + ".*re-enroll"):
        Profile.load(path)


def test_enrolled_rule_profile_scores_the_same_in_c_and_inspector(build, tmp_path):
    """End to end: a profile enrolled by Inspector with top20% (channel subset, real
    calibration) scores the same through careg_score as through Inspector.inspect."""
    from careg_edge import Inspector, preprocess
    from careg_edge.features import assemble
    from tests.test_pipeline import ToyRuntime, _texture
    insp = Inspector(ToyRuntime())
    prof = insp.enroll([_texture(s) for s in range(3)], estimator="padim", augment="none", d=10,
                       image_score="top20%")
    path = prof.save(tmp_path / "p.careg")
    imgs = [_texture(11), _texture(12)]
    imgs[0][20:30, 20:30] = [250, 20, 20]
    results = insp.inspect_batch(imgs, prof)
    road = insp._prepared(prof, {})
    out = insp.runtime.infer(preprocess.normalise([preprocess.resize(i, road.spec.input_size) for i in imgs],
                                                  insp.meta))
    assemble(out, road.spec, road.transform, 1).tofile(tmp_path / "x.f32")
    r = run(build["dir"] / "careg_score_example", path, tmp_path / "x.f32")
    assert r.returncode == 0, r.stderr
    scores, _ = parse(r.stdout)
    np.testing.assert_allclose(scores, [res.score for res in results], rtol=1e-5)
    assert max(res.anomaly_map.max() for res in results) > scores.max() * (1 + 1e-3)


def test_rule_on_large_maps_uses_threads(build, tmp_path):
    """4 maps of 256x256 (2^18 values: the threaded path) score by top10% and by mean."""
    for rule, percent in (("top10%", 10.0), ("mean", 100.0)):
        path = tmp_path / f"{rule}.careg"
        rng = np.random.default_rng(1)
        P, D = 30, 4
        L = np.tril(rng.normal(scale=0.1, size=(P, D, D)))
        L[:, range(D), range(D)] = 1.0
        t = {"mean": rng.normal(size=(P, D)).astype(np.float32), "precision_factor": ref.pack_factor(L)}
        meta = dict(_meta("padim", rule), image_h="256", image_w="256", sigma="4.0")
        write_container(path, t, meta, "careg-profile", 1)
        x = rng.normal(size=(4, P, D)).astype(np.float32)
        x.tofile(tmp_path / "x.f32")
        r = run(build["dir"] / "careg_score_example", path, tmp_path / "x.f32", "-", 2)
        assert r.returncode == 0, r.stderr
        maps, _ = ref.anomaly_map(ref.mahalanobis(x, t["mean"], t["precision_factor"]).reshape(4, 6, 5),
                                  None, 256, 256, 4.0)
        np.testing.assert_allclose(parse(r.stdout)[0], top_mean(maps, percent), rtol=1e-5)


# ---- the road from C: careg_inspect on raw encoder outputs ----------------------------
# Parity of the three paths (C example program, Python Inspector, NumPy oracle) over
# every estimator x image-score rule x localisation mode, on the toy encoder (with a
# registration shift) and on real MPDD images with the bundled encoder.
# Tolerance: scores rtol 1e-4 against the float64 oracle, 1e-5 between C and Python
# (the same C++ code, different thread counts); verdicts identical.
from tests.test_core_road import (ESTIMATORS, MODES, RULES, _batch, _outputs, real,  # noqa: E402,F401
                                  toy, toy_profiles, with_rule)


def parse_inspect(stdout):
    rows = [line for line in stdout.splitlines() if line.startswith("image ")]
    scores = np.array([float(r.split()[3]) for r in rows])
    verdicts = [r.split("-> ")[1].split()[0] == "DEFECT" for r in rows]
    diff = [float(line.rsplit("=", 1)[1]) for line in stdout.splitlines() if line.startswith("input check")]
    return scores, verdicts, diff


def c_inspect(build, tmp_path, insp, prof, img, tag=""):
    """The C example on one image: PPM + encoder outputs written by careg-edge."""
    from careg_edge import preprocess
    rgb = preprocess.resize(img, tuple(prof.image_size))
    x = preprocess.normalise([rgb], insp.meta)
    ppm, outp, pp = tmp_path / f"i{tag}.ppm", tmp_path / f"o{tag}.careg-out", tmp_path / f"p{tag}.careg"
    scoring.write_ppm(ppm, rgb)
    scoring.save_outputs(outp, insp.runtime.infer(x), x)
    prof.save(pp)
    r = run(build["dir"] / "careg_inspect_example", pp, ppm, outp, 2)
    assert r.returncode == 0, r.stdout + r.stderr
    return parse_inspect(r.stdout), r.stdout


def three_paths(build, tmp_path, insp, prof, imgs):
    py = insp.inspect_batch(imgs, prof)
    want = ref.road(_outputs(insp, imgs, tuple(prof.image_size)), prof)
    for i, img in enumerate(imgs):
        (score, verdict, diff), out = c_inspect(build, tmp_path, insp, prof, img, str(i))
        assert diff and diff[0] < 1e-5, out          # the C preprocessing == careg-edge's
        np.testing.assert_allclose(score, [py[i].score], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(score, [want["scores"][i]], rtol=1e-4, atol=1e-6)
        assert verdict == [py[i].is_defect] == [bool(want["defect"][i])]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("mode", MODES)
def test_c_python_oracle_agree_synthetic(build, tmp_path, toy, toy_profiles, estimator, mode):
    for rule in RULES:
        three_paths(build, tmp_path, toy, with_rule(toy_profiles[(estimator, mode)], rule), _batch()[:2])


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("mode", MODES)
def test_c_python_oracle_agree_real_images(build, tmp_path, real, estimator, mode):
    insp, profs, imgs = real
    for rule in RULES:
        three_paths(build, tmp_path, insp, with_rule(profs[(estimator, mode)], rule), imgs[:2])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_sanitized_inspect_threads_bad_inputs_and_fuzz(build, tmp_path, toy, toy_profiles, estimator):
    """careg_inspect under ASan/UBSan: 4 threads, every refused input, and the profile
    fuzzer over an enrolled profile (its JSON feature layout is parsed at load)."""
    prof = with_rule(toy_profiles[(estimator, "registered")], "top20%")
    prof.save(tmp_path / "p.careg")
    x = np.zeros((3, 3, 64, 64), np.float32)
    scoring.save_outputs(tmp_path / "o.careg-out", toy.runtime.infer(x))
    r = run(build["dir"] / "careg_core_test", tmp_path / "p.careg", tmp_path / "o.careg-out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 concurrent inspections identical" in r.stdout and "bad inputs refused" in r.stdout
    assert r.stdout.strip().endswith("OK")


def test_c_reports_nan_score_as_defect_with_reason(build, tmp_path, toy, toy_profiles):
    prof = with_rule(toy_profiles[("padim", "unwarp")], "max")
    mean = prof.tensors["mean"].copy()
    mean[7, 1] = np.inf
    prof.tensors = dict(prof.tensors, mean=mean)
    prof.threshold = 1e30
    (score, verdict, _), out = c_inspect(build, tmp_path, toy, prof, _batch()[0])
    assert not np.isfinite(score[0]) and verdict == [True] and "a defect" in out
    r = toy.inspect(_batch()[0], prof)
    assert r.is_defect and ("NaN" in r.reason or "inf" in r.reason)


def test_c_names_the_field_of_a_profile_that_does_not_fit(build, tmp_path, toy, toy_profiles):
    """Outputs of another encoder (wrong channel count) and a profile without its JSON
    feature layout: one line naming the field, exit 1, no crash."""
    prof = toy_profiles[("patchcore", "unwarp")]
    prof.save(tmp_path / "p.careg")
    rgb = _batch()[0]
    scoring.write_ppm(tmp_path / "i.ppm", rgb)
    out = toy.runtime.infer(np.zeros((1, 3, 64, 64), np.float32))
    out["feat2"] = np.concatenate([out["feat2"], out["feat2"][:, :1]], axis=1)
    scoring.save_outputs(tmp_path / "o.careg-out", out)
    r = run(build["dir"] / "careg_inspect_example", tmp_path / "p.careg", tmp_path / "i.ppm", tmp_path / "o.careg-out")
    assert r.returncode == 1 and "encoder output feat2 has 9 channels, the profile expects 8" in r.stderr, r.stderr
    path = tmp_path / "bare.careg"
    write_padim(path)
    r = run(build["dir"] / "careg_inspect_example", path, tmp_path / "i.ppm", tmp_path / "o.careg-out")
    assert r.returncode == 1 and "profile JSON lacks 'normalisation'" in r.stderr, r.stderr
