"""End-to-end speed on this machine: enroll and inspect through the public API, per
stage (decode, preprocess, encoder, features, scoring, unwarp/blur), per backend and
backbone, and side by side on the same images the alternatives a user would pick:
a straightforward RegAD-style PyTorch pipeline (bench/regad_baseline.py) and anomalib
2.x PaDiM / PatchCore (bench/bench_anomalib.py, own venv). Prints ratios.

`--before REV` (default: the last commit with the NumPy/faiss scoring road) builds
that revision's package and compiled core under build/bench/ and times it in the
same run, on the same images, in a subprocess; the table then gives the "after"
over "before" ratio of every stage, of the stages after the encoder ("post": all but
decode and encode) and of the whole-image p50.

    python bench/bench_e2e.py --data ../shared/data/mpdd/metal_plate --n 20 --shots 4 --threads 2
    careg-edge bench ...      (same options)

Estimators may carry options: "padim:fp16" enrolls PaDiM with fp16 factors.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def pct(v, q):
    return float(np.percentile(v, q)) if len(v) else float("nan")


def images_of(data: Path, n: int, shots: int):
    from careg_edge.imageio import list_images
    support = list_images(data / "train" / "good")[:shots]
    test = sorted(p for d in sorted((data / "test").iterdir()) if d.is_dir() for p in list_images(d))
    step = max(1, len(test) // n)
    return test[::step][:n], support


# The last commit whose inspection assembled features in NumPy, searched with faiss
# when installed and computed top-P % in NumPy (before the one compiled road).
BEFORE = "3b45ef8"


def model_for(backbone: str, backend: str):
    if backbone == "default":
        return None            # the bundled encoder (ONNX Runtime)
    if backend == "torch":
        return f"imagenet:{backbone}"
    from careg_edge.export.onnx import export_onnx
    out = REPO / "build" / "bench" / f"imagenet-{backbone}.onnx"
    if not out.exists():
        export_onnx(f"imagenet:{backbone}", out, verbose=False)
    return str(out)


def estimator_options(spec: str):
    """'padim:fp16' -> ('padim', {'fp16': True})."""
    name, *opts = spec.split(":")
    return name, {o: True for o in opts}


def bench_careg(backbone, backend, estimator, test, support, threads, augment, tag=""):
    from careg_edge import Inspector
    from careg_edge.imageio import read_image
    insp = Inspector(model=model_for(backbone, backend), backend=backend, threads=threads)
    name, opts = estimator_options(estimator)
    t = time.perf_counter()
    profile = insp.enroll([read_image(p) for p in support], estimator=name, augment=augment, **opts)
    enroll_ms = (time.perf_counter() - t) * 1e3
    insp.inspect(read_image(test[0]), profile)  # warm-up
    lat, stages = [], {}
    for p in test:
        t = time.perf_counter()
        img = read_image(p)
        decode = (time.perf_counter() - t) * 1e3
        r = insp.inspect(img, profile)
        lat.append((time.perf_counter() - t) * 1e3)
        for k, v in dict(decode=decode, **r.timings).items():
            stages.setdefault(k, []).append(v)
    imgs = [read_image(p) for p in test]
    t = time.perf_counter()
    insp.inspect_batch(imgs, profile)
    batch_ips = len(imgs) / (time.perf_counter() - t)
    return {"name": f"careg-edge{tag} {backbone}/{backend}/{estimator}", "enroll_ms": enroll_ms,
            "latency_ms": lat, "stages_ms": {k: statistics.median(v) for k, v in stages.items()},
            "batch_images_per_s": batch_ips, "input": "x".join(map(str, insp.meta.input_size))}


def row(r):
    lat = r["latency_ms"]
    return (f"{r['name']:<44} {r['enroll_ms'] / 1e3:8.2f} {pct(lat, 50):8.1f} {pct(lat, 90):8.1f} "
            f"{pct(lat, 99):8.1f} {1e3 / np.mean(lat):7.2f}  {r.get('input', '')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/mpdd/metal_plate",
                    help="One category folder in the MVTec layout.")
    ap.add_argument("--n", type=int, default=20, help="Test images timed.")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--backbones", default="default",
                    help="'default' (the bundled encoder) or imagenet backbones, comma list.")
    ap.add_argument("--backends", default="onnxruntime")
    ap.add_argument("--estimators", default="patchcore,padim,padim:fp16")
    ap.add_argument("--augment", default="none", help="Enrollment augmentation (auto costs more).")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--baselines", default="", help="Comma list of regad,anomalib, or '' for none.")
    ap.add_argument("--before", default=BEFORE, help="Git revision to time as 'before' ('' for none).")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help="Also write all numbers here.")
    a = ap.parse_args(argv)
    test, support = images_of(a.data, a.n, a.shots)
    if a.worker:   # the "before" package, in its own process: just time and write JSON
        runs = [bench_careg(bb, be, est, test, support, a.threads, a.augment, " before")
                for bb in a.backbones.split(",") for be in a.backends.split(",")
                for est in a.estimators.split(",") if ":" not in est]
        a.worker.write_text(json.dumps(runs))
        return
    print(f"# {len(test)} test images, K={len(support)} from {a.data}; {platform.processor() or platform.machine()}, "
          f"threads={a.threads or 'all'}")
    runs = []
    for bb in a.backbones.split(","):
        for be in a.backends.split(","):
            for est in a.estimators.split(","):
                try:
                    runs.append(bench_careg(bb, be, est, test, support, a.threads, a.augment))
                except Exception as e:  # one unavailable backend must not hide the others
                    print(f"SKIP careg-edge {bb}/{be}/{est}: {e.__class__.__name__}: {e}")
    if a.before:
        runs += run_before(a, test)
    base = [b for b in a.baselines.split(",") if b]
    if "regad" in base:
        import regad_baseline
        r = regad_baseline.run(test, support, size=224, threads=a.threads)
        runs.append(dict(r, name="RegAD-style torch (448-d full cov)", input="224x224"))
    if "anomalib" in base:
        import bench_anomalib
        res = bench_anomalib.run(test, support, a.threads)
        if "skipped" in res:
            print(f"SKIP anomalib: {res['skipped']}")
        for name, r in res.items() if "skipped" not in res else []:
            runs.append(dict(r, name=f"anomalib {name} ({r['backbone']})"))
    report(runs)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(runs, indent=1))


def build_before(rev: str) -> Path:
    """REV's package with its own compiled core, under build/bench/before-REV/pkg."""
    out = REPO / "build" / "bench" / f"before-{rev}"
    pkg = out / "pkg"
    if (out / "ok").exists():
        return pkg
    shutil.rmtree(out, ignore_errors=True)
    src = out / "src"
    src.mkdir(parents=True)
    arch = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    (out / "src.tar").write_bytes(arch)
    with tarfile.open(out / "src.tar") as t:
        t.extractall(src, filter="data")
    shutil.copytree(src / "careg_edge", pkg / "careg_edge")
    for sub in ("calibration", "export"):   # installed inside the package (pyproject)
        shutil.copytree(src / sub, pkg / "careg_edge" / sub)
    import pybind11
    cfg = ["cmake", "-S", str(src), "-B", str(out / "b"), "-DSKBUILD=ON", "-DCAREG_PYTHON=ON",
           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}",
           "-DCMAKE_BUILD_TYPE=Release"]
    for cmd in (cfg, ["cmake", "--build", str(out / "b"), "-j2", "--target", "_core"]):
        subprocess.run(cmd, check=True, capture_output=True)
    for so in (out / "b").glob("_core*.so"):
        shutil.copy(so, pkg / "careg_edge" / so.name)
    (out / "ok").write_text(rev)
    return pkg


def run_before(a, test) -> list:
    """Time the --before revision on the same images, in a subprocess that imports it
    instead of the installed careg_edge."""
    try:
        pkg = build_before(a.before)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"SKIP before ({a.before}): cannot build it: {e}")
        return []
    out = REPO / "build" / "bench" / "before.json"
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
            f"type(f).__module__.lower()]; sys.path.insert(0, {str(pkg)!r}); sys.path.insert(1, {str(HERE)!r}); "
            "import bench_e2e; bench_e2e.main(sys.argv[1:])")
    args = ["--data", str(a.data.resolve()), "--n", str(a.n), "--shots", str(a.shots), "--backbones", a.backbones,
            "--backends", a.backends, "--estimators", a.estimators, "--augment", a.augment,
            "--threads", str(a.threads), "--worker", str(out)]
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=str(pkg), capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=""))
    if r.returncode != 0:
        print(f"SKIP before ({a.before}): {r.stderr[-800:]}")
        return []
    return json.loads(out.read_text())


def post(r) -> float:
    """Median ms of everything but decode and encode (preprocess, features, score, map)."""
    return sum(v for k, v in r["stages_ms"].items() if k not in ("decode", "encode"))


def report(runs):
    print(f"\n{'pipeline':<44} {'enroll s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'img/s':>7}  input")
    for r in runs:
        print(row(r))
    ours = [r for r in runs if r["name"].startswith("careg-edge")]
    if ours:
        print("\nper-stage medians (ms): " + "; ".join(
            f"{r['name'][11:]}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items()) for r in ours))
        print(f"\n{'pipeline':<44} {'post ms':>8} {'p50 ms':>8}   (post = all but decode and encode)")
        for r in ours:
            print(f"{r['name']:<44} {post(r):8.2f} {pct(r['latency_ms'], 50):8.1f}")
        before = {r["name"].replace(" before", ""): r for r in ours if " before" in r["name"]}
        for r in ours:
            b = before.get(r["name"])
            if b is None or r is b:
                continue
            stages = ", ".join(f"{k} x{b['stages_ms'][k] / v:.2f}" for k, v in r["stages_ms"].items()
                               if k in b["stages_ms"] and v > 0)
            print(f"before/after {r['name'][11:]}: post {post(b):.1f} -> {post(r):.1f} ms (x{post(b) / post(r):.2f}), "
                  f"p50 {pct(b['latency_ms'], 50):.1f} -> {pct(r['latency_ms'], 50):.1f} ms "
                  f"(x{pct(b['latency_ms'], 50) / pct(r['latency_ms'], 50):.2f}); {stages}")
        best = min(ours, key=lambda r: pct(r["latency_ms"], 50))
        print(f"\nratios vs {best['name']} (p50 latency / enroll time; >1 = careg-edge faster):")
        for r in runs:
            if r is not best:
                print(f"  {r['name']:<44} latency x{pct(r['latency_ms'], 50) / pct(best['latency_ms'], 50):6.2f}"
                      f"   enroll x{r['enroll_ms'] / best['enroll_ms']:6.2f}")


if __name__ == "__main__":
    main()
