"""anomalib 2.x PaDiM and PatchCore timed on the same images as careg-edge.

anomalib is never a careg-edge dependency: this script installs it into its own
virtual environment, build/anomalib-venv, next to torch 2.14.1 + torchvision 0.29.1
(the pair whose wheels import together here; the project's torch 2.13.0 has no
matching torchvision), and runs the timing there in a subprocess. No pretrained download is possible here, so the models are built
with pretrained weights off (speed does not depend on weight values).

The torch models (PadimModel, PatchcoreModel) are driven directly, without the
Lightning Engine, so the numbers are the models' own cost plus decode/resize:
    train mode forward over the support images -> fit / coreset subsample
    eval mode forward per test image (batch 1) -> score and anomaly map
If anomalib cannot be installed offline, the script prints the reason and exits 0.

    python bench/bench_anomalib.py --images a.png ... --support s.png ... [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "build" / "anomalib-venv"
PY = VENV / "bin" / "python"
SPEC = "anomalib[core]>=2,<3"
TORCH = ("torch==2.14.1", "torchvision==0.29.1")


def _import_error():
    """None when anomalib's models import in the venv, else the reason (one line)."""
    if not PY.exists():
        return f"no virtual environment at {VENV}"
    r = subprocess.run([str(PY), "-c", "import anomalib.models.image.padim.torch_model"],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return None
    last = (r.stderr.strip().splitlines() or ["?"])[-1]
    if "torchvision::nms" in last:  # the CUDA torchvision wheel next to the CPU torch
        last += (" (torchvision's C extension needs libtorch_cuda: only the CUDA build of "
                 "torchvision is available offline here, and torch is the CPU wheel)")
    return last[:400]


def ensure_venv(install: bool = True):
    """None when ready, else a one-line reason why anomalib is unavailable."""
    err = _import_error()
    if err is None:
        return None
    if not install or PY.exists() and "No module named 'anomalib" not in err:
        return f"anomalib unusable in {VENV}: {err}"
    try:
        if not PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        r = subprocess.run([str(PY), "-m", "pip", "install", "-q", *TORCH, SPEC],
                           capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as e:
        return f"could not create {VENV}: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
        return f"pip install {SPEC} failed (offline?): {last[:200]}"
    err = _import_error()
    return None if err is None else f"anomalib installed but does not import: {err}"


def run(images, support, threads: int = 0, install: bool = True) -> dict:
    """{"padim": {...}, "patchcore": {...}} timings in ms, or {"skipped": reason}."""
    reason = ensure_venv(install)
    if reason:
        return {"skipped": reason}
    cmd = [str(PY), str(Path(__file__).resolve()), "--worker", "--threads", str(threads),
           "--images", *map(str, images), "--support", *map(str, support)]
    env = dict(os.environ, PYTHONPATH="")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"skipped": "anomalib worker failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- inside the venv
def _worker(images, support, threads):
    import numpy as np
    import torch
    from PIL import Image
    from anomalib.models.image.padim.torch_model import PadimModel
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    if threads:
        torch.set_num_threads(threads)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def load(paths):  # anomalib's default pre-processing: resize to 256 x 256, ImageNet norm
        arr = []
        for p in paths:
            with Image.open(p) as im:
                arr.append(np.asarray(im.convert("RGB").resize((256, 256), Image.BILINEAR), np.float32))
        x = torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2) / 255.0
        return (x - mean) / std

    out = {}
    builders = {
        "padim": lambda: PadimModel(backbone="resnet18", pre_trained=False),
        "patchcore": lambda: PatchcoreModel(layers=["layer2", "layer3"], backbone="wide_resnet50_2",
                                            pre_trained=False),
    }
    for name, build in builders.items():
        torch.manual_seed(0)
        model = build()
        t = time.perf_counter()
        model.train()
        with torch.no_grad():
            for p in support:
                model(load([p]))
        if name == "padim":
            model.fit()
        else:
            model.subsample_embedding(0.1)
        enroll_ms = (time.perf_counter() - t) * 1e3
        model.eval()
        lat = []
        with torch.no_grad():
            for i, p in enumerate(images):
                t = time.perf_counter()
                r = model(load([p]))
                float(r.pred_score.max())
                if i > 0:  # first call warms up
                    lat.append((time.perf_counter() - t) * 1e3)
        out[name] = {"enroll_ms": enroll_ms, "latency_ms": lat,
                     "backbone": "resnet18" if name == "padim" else "wide_resnet50_2",
                     "input": "256x256", "anomalib": __import__("anomalib").__version__}
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--support", nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-install", action="store_true", help="Only use an existing venv.")
    a = ap.parse_args()
    if a.worker:
        return _worker(a.images, a.support, a.threads)
    res = run(a.images, a.support, a.threads, install=not a.no_install)
    if "skipped" in res:
        print(f"SKIP anomalib: {res['skipped']}")
        return
    for name, r in res.items():
        import statistics
        print(f"anomalib {name:9s} enroll {r['enroll_ms']:8.0f} ms   inspect p50 "
              f"{statistics.median(r['latency_ms']):7.1f} ms/image ({r['backbone']}, {r['input']})")


if __name__ == "__main__":
    main()
