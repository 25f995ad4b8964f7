"""A straightforward RegAD-style PyTorch pipeline: the baseline a user would write
from the RegAD paper / reference code, used by bench_e2e.py for speed ratios.

* ResNet-18 trunk, layer1..3 (64 + 128 + 256 = 448 channels), stage-2/3 maps
  upsampled to the layer1 grid (stride 4: 56 x 56 positions at 224 x 224 input).
  RegAD's STNs are identity at inference for an untrained model and cost little;
  the trunk is built with random weights (speed does not depend on weight values).
* Enrollment: support features -> per-position mean and full 448 x 448 covariance
  (+ 0.01 I), inverted position by position in a Python loop, float32.
* Inference: Mahalanobis distance position by position in a Python loop, bilinear
  upsample to the input size, Gaussian blur (sigma 4), max = image score.
Memory: the precision matrices take P * 448^2 * 4 bytes (2.5 GB at 224 x 224).

    python bench/regad_baseline.py --images a.png b.png ... --support s1.png ...
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F


def load(paths, size):
    from PIL import Image
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    out = []
    for p in paths:
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255.0
        out.append(((a - mean) / std).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


class RegADStyle:
    def __init__(self, size=224, threads=0):
        from careg_edge.encoder.backbones import create_backbone
        if threads:
            torch.set_num_threads(threads)
        self.size = size
        self.trunk = create_backbone("resnet18", weights=None).eval()

    @torch.no_grad()
    def embed(self, x):
        f1, f2, f3 = self.trunk(x)
        h, w = f1.shape[-2:]
        e = torch.cat([f1, F.interpolate(f2, (h, w), mode="nearest"),
                       F.interpolate(f3, (h, w), mode="nearest")], 1)
        return e  # [B, 448, h, w]

    def fit(self, support):
        e = self.embed(support)
        b, c, h, w = e.shape
        e = e.reshape(b, c, h * w)
        self.mean = e.mean(0)  # [C, P]
        self.cov_inv = torch.empty(h * w, c, c)
        eye = 0.01 * torch.eye(c)
        for i in range(h * w):  # the per-position loop of the reference code
            d = e[:, :, i] - self.mean[:, i]
            cov = d.T @ d / max(b - 1, 1) + eye
            self.cov_inv[i] = torch.linalg.inv(cov)
        self.grid = (h, w)

    @torch.no_grad()
    def score(self, x):
        e = self.embed(x)
        b, c, h, w = e.shape
        e = e.reshape(b, c, h * w)
        dist = torch.empty(b, h * w)
        for i in range(h * w):
            d = e[:, :, i] - self.mean[:, i]
            dist[:, i] = torch.sqrt(((d @ self.cov_inv[i]) * d).sum(1))
        m = F.interpolate(dist.reshape(b, 1, h, w), (self.size, self.size), mode="bilinear",
                          align_corners=False)
        m = blur(m, 4.0)[:, 0]
        return m.amax((1, 2)), m


def blur(m, sigma):
    r = int(np.ceil(4 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(m, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def run(images, support, size=224, threads=0, warmup=1):
    """Timings (ms) of fit and per-image scoring (batch 1, decode + preprocess included)."""
    model = RegADStyle(size, threads)
    t = time.perf_counter()
    model.fit(load(support, size))
    enroll_ms = (time.perf_counter() - t) * 1e3
    lat = []
    for i, p in enumerate(images):
        t = time.perf_counter()
        model.score(load([p], size))
        if i >= warmup:
            lat.append((time.perf_counter() - t) * 1e3)
    return {"enroll_ms": enroll_ms, "latency_ms": lat}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--support", nargs="+", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    r = run(a.images, a.support, a.size, a.threads)
    print(json.dumps({"enroll_ms": r["enroll_ms"], "p50_ms": float(np.median(r["latency_ms"]))}))


if __name__ == "__main__":
    main()
