"""End-to-end speed on this machine: enroll and inspect through the public API, per
stage (decode, preprocess, encoder, features, scoring, unwarp/blur), per backend and
backbone, and side by side on the same images the alternatives a user would pick:
a straightforward RegAD-style PyTorch pipeline (bench/regad_baseline.py) and anomalib
2.x PaDiM / PatchCore (bench/bench_anomalib.py, own venv). Prints ratios.

    python bench/bench_e2e.py --data ../shared/data/mpdd/metal_plate --n 20 --shots 4
    careg-edge bench ...      (same options)
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
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


def model_for(backbone: str, backend: str) -> str:
    if backend == "torch":
        return f"imagenet:{backbone}"
    from careg_edge.export.onnx import export_onnx
    out = REPO / "build" / "bench" / f"imagenet-{backbone}.onnx"
    if not out.exists():
        export_onnx(f"imagenet:{backbone}", out, verbose=False)
    return str(out)


def bench_careg(backbone, backend, estimator, test, support, threads, augment):
    from careg_edge import Inspector
    from careg_edge.imageio import read_image
    insp = Inspector(model=model_for(backbone, backend), backend=backend, threads=threads)
    t = time.perf_counter()
    profile = insp.enroll([read_image(p) for p in support], estimator=estimator, augment=augment)
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
    return {"name": f"careg-edge {backbone}/{backend}/{estimator}", "enroll_ms": enroll_ms,
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
    ap.add_argument("--backbones", default="resnet50v2")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--estimators", default="patchcore,padim")
    ap.add_argument("--augment", default="none", help="Enrollment augmentation (auto costs more).")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--baselines", default="regad,anomalib", help="Comma list, or '' for none.")
    ap.add_argument("--json", type=Path, default=None, help="Also write all numbers here.")
    a = ap.parse_args(argv)
    test, support = images_of(a.data, a.n, a.shots)
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


def report(runs):
    print(f"\n{'pipeline':<44} {'enroll s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'img/s':>7}  input")
    for r in runs:
        print(row(r))
    ours = [r for r in runs if r["name"].startswith("careg-edge")]
    if ours:
        print("\nper-stage medians (ms): " + "; ".join(
            f"{r['name'][11:]}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items()) for r in ours))
        best = min(ours, key=lambda r: pct(r["latency_ms"], 50))
        print(f"\nratios vs {best['name']} (p50 latency / enroll time; >1 = careg-edge faster):")
        for r in runs:
            if r is not best:
                print(f"  {r['name']:<44} latency x{pct(r['latency_ms'], 50) / pct(best['latency_ms'], 50):6.2f}"
                      f"   enroll x{r['enroll_ms'] / best['enroll_ms']:6.2f}")


if __name__ == "__main__":
    main()
