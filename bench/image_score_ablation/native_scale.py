"""Input geometry ablation (exploratory): squash every image to the encoder's square
input (what the pipeline does) vs keep the pixel scale and aspect ratio and encode
overlapping encoder-sized windows ("tile"), stitched into one stride-8 feature map.

Why: magnetic-tile crops are 103-620 px on a side at one physical pixel scale;
squashing them to 224x224 stretches the texture by a different factor per image,
so a good tile with an unusual aspect ratio looks unlike every support tile.

    OMP_NUM_THREADS=1 python bench/image_score_ablation/native_scale.py \
        runs/models/efficientnet_lite0_224.onnx ../shared/data/magnetic_tile_defects \
        magnetic_tile squash,tile:1.0

PatchCore-style scoring (layers 2+3 at stride 8, 3x3 mean aggregation, global 1-NN,
sigma 1 on the grid), no augmentation, the eval protocol's seeded support sets
(rounds 0-1, K = 2/8) and the fixed 260-image test subsample of score.py.
"""
import sys
from pathlib import Path

import cv2
import faiss
import numpy as np
from scipy.ndimage import gaussian_filter

from careg_edge import imageio, preprocess
from careg_edge.lab import datasets
from careg_edge.lab.metrics import auroc
from careg_edge.pipeline import open_runtime


def windows(n: int, size: int):
    """Start offsets of windows of `size` covering [0, n) (n >= size), evenly spread."""
    if n <= size:
        return [0]
    count = int(np.ceil(n / size)) + 1          # ~50 % overlap at most
    return [int(round(x)) for x in np.linspace(0, n - size, count)]


def stride8(rt, batch):
    o = rt.infer(preprocess.normalise(batch, rt.meta))
    f3 = o["feat3"]
    b, c, h, w = f3.shape
    up = np.stack([np.stack([cv2.resize(f3[i, j], (w * 2, h * 2), interpolation=cv2.INTER_LINEAR)
                             for j in range(c)]) for i in range(b)])
    return np.concatenate([o["feat2"], up], 1)                   # [B, C, S/8, S/8]


def encode(rt, rgb, mode):
    size = rt.meta.input_size[0]
    if mode == "squash":
        return stride8(rt, [preprocess.resize(rgb, (size, size))])[0]
    scale = float(mode.split(":")[1])
    if scale != 1.0:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    pad = cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
    H, W = pad.shape[:2]
    ys, xs = windows(H, size), windows(W, size)
    crops = [pad[y:y + size, x:x + size] for y in ys for x in xs]
    feats = stride8(rt, crops)
    g = size // 8
    acc = np.zeros((feats.shape[1], H // 8 + 1, W // 8 + 1), np.float32)
    cnt = np.zeros(acc.shape[1:], np.float32)
    for f, (y, x) in zip(feats, [(y, x) for y in ys for x in xs]):
        acc[:, y // 8:y // 8 + g, x // 8:x // 8 + g] += f
        cnt[y // 8:y // 8 + g, x // 8:x // 8 + g] += 1
    vh, vw = max(1, int(np.ceil(h / 8))), max(1, int(np.ceil(w / 8)))
    return (acc[:, :vh, :vw] / np.maximum(cnt[:vh, :vw], 1)).astype(np.float32)


def aggregate(f):
    p = np.pad(f, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = f.shape[1:]
    return sum(p[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9


def rows(f):
    """[C, h, w] -> ([h*w, C] aggregated patch rows, (h, w))."""
    return np.ascontiguousarray(aggregate(f).reshape(f.shape[0], -1).T, np.float32), f.shape[1:]


def main():
    model, root, cat, modes = sys.argv[1:5]
    rt = open_runtime(model, "onnxruntime", 1)
    c = datasets.load_category(Path(root), cat)
    names = [p.name for p in c.train]
    y_all = np.array([t.label for t in c.test])
    sub = np.sort(np.random.default_rng(1).choice(len(y_all), min(260, len(y_all)), replace=False))
    y = y_all[sub]
    for mode in modes.split(","):
        test = [rows(encode(rt, imageio.read_image(c.test[i].path), mode)) for i in sub]
        out = {}
        for k in (2, 8):
            res = {"max": [], "top20%": [], "mean": []}
            for rnd in range(2):
                sup = datasets.draw_support(names, k, cat, rnd, 0)
                bank = np.concatenate([rows(encode(rt, imageio.read_image(c.train[names.index(n)]), mode))[0]
                                       for n in sup])
                ix = faiss.IndexFlatL2(bank.shape[1])
                ix.add(bank)
                s = {"max": [], "top20%": [], "mean": []}
                for q, shape in test:
                    d, _ = ix.search(q, 1)
                    m = gaussian_filter(np.sqrt(np.maximum(d[:, 0], 0)).reshape(shape), 1.0).ravel()
                    s["max"].append(float(m.max()))
                    n = max(1, int(round(0.2 * m.size)))
                    s["top20%"].append(float(np.sort(m)[-n:].mean()))
                    s["mean"].append(float(m.mean()))
                for key in res:
                    res[key].append(auroc(y, np.array(s[key])))
            out[k] = {key: round(float(np.mean(v)), 3) for key, v in res.items()}
        print(f"{mode:12s} K2 {out[2]}  K8 {out[8]}", flush=True)


if __name__ == "__main__":
    main()
