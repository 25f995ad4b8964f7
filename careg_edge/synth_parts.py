"""Procedural product images for the bundled demo: a turned steel flange on a belt.

Everything is drawn from a seed with NumPy + OpenCV, so the demo material is a
real artifact of this project (no third-party images, nothing from ../shared).
A good part varies the way parts on a line do: pose (rotation, shift, scale),
lighting direction and brightness, lathe-mark phase, sensor noise. Defects are
drawn onto a good part and come with their ground-truth mask:

    scratch       thin curved groove catching the light
    dent          shallow crater: shaded dark on one side, bright on the other
    stain         irregular oily/rust blob with a colour tint
    missing_hole  one of the six bolt holes was never drilled

Regenerate the bundled set with `python -m careg_edge.synth_parts OUT_DIR`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

DEFECTS = ("scratch", "dent", "stain", "missing_hole")
N_HOLES = 6


@dataclass
class Pose:
    cx: float
    cy: float
    scale: float   # outer radius in pixels
    angle: float   # radians


def _cv2():
    import cv2
    return cv2


def _smooth_noise(rng, size: int, sigma: float) -> np.ndarray:
    """Zero-mean unit-std low-frequency noise field."""
    cv2 = _cv2()
    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma)
    return (n - n.mean()) / (n.std() + 1e-6)


def _polar(size: int, pose: Pose):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = x - pose.cx, y - pose.cy
    return np.hypot(dx, dy) / pose.scale, np.arctan2(dy, dx) - pose.angle


def _hole_centres(pose: Pose):
    for k in range(N_HOLES):
        a = pose.angle + 2 * math.pi * k / N_HOLES
        yield pose.cx + 0.68 * pose.scale * math.cos(a), pose.cy + 0.68 * pose.scale * math.sin(a)


def _good(rng, size: int, pose: Pose, skip_hole: Optional[int] = None) -> np.ndarray:
    """Float RGB in [0,1] of a defect-free flange (optionally without one hole)."""
    r, th = _polar(size, pose)
    light = np.array([math.cos(rng.uniform(0, 2 * math.pi)), math.sin(rng.uniform(0, 2 * math.pi))])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    shade = 1.0 + 0.18 * (light[0] * x + light[1] * y)
    belt = 0.16 + 0.02 * _smooth_noise(rng, size, 1.2)
    # lathe marks: fine concentric rings whose phase wanders slowly around the part
    rings = 0.5 + 0.5 * np.sin(r * pose.scale * 1.9 + 2.0 * _smooth_noise(rng, size, 12))
    metal = 0.58 + 0.07 * rings + 0.03 * _smooth_noise(rng, size, 3)
    g = np.where(r <= 1.0, metal, belt)
    g = np.where((r > 0.93) & (r <= 1.0), metal * 0.82, g)            # chamfered rim
    g = np.where((r > 0.30) & (r <= 0.36), metal * 1.22, g)            # bright bevel around bore
    g = np.where(r <= 0.30, 0.08, g)                                   # bore
    notch = (np.abs(np.angle(np.exp(1j * th))) < 0.07) & (r > 0.90) & (r <= 1.0)
    g = np.where(notch, 0.1, g)                                        # keyway: breaks the symmetry
    for k, (hx, hy) in enumerate(_hole_centres(pose)):
        if k == skip_hole:
            continue
        d = np.hypot(x * size + size / 2 - hx, y * size + size / 2 - hy) / pose.scale
        g = np.where((d > 0.085) & (d <= 0.11) & (r <= 1.0), g * 1.25, g)
        g = np.where(d <= 0.085, 0.07, g)
    g = g * shade * rng.uniform(0.92, 1.08)
    tint = np.array([1.0, 1.0, 1.04]) * rng.uniform(0.98, 1.02, 3)
    return np.clip(g[..., None] * tint, 0, 1)


def _random_pose(rng, size: int) -> Pose:
    return Pose(cx=size / 2 + rng.uniform(-0.04, 0.04) * size,
                cy=size / 2 + rng.uniform(-0.04, 0.04) * size,
                scale=size * 0.40 * rng.uniform(0.97, 1.03),
                angle=rng.uniform(-0.35, 0.35))


def _surface_point(rng, pose: Pose, rmin=0.42, rmax=0.86) -> Tuple[float, float]:
    # On metal, away from bore and holes' ring, so every defect sits on the part.
    rad = rng.uniform(rmin, rmax) * pose.scale
    a = pose.angle + rng.uniform(0, 2 * math.pi)
    return pose.cx + rad * math.cos(a), pose.cy + rad * math.sin(a)


def _scratch(rng, img, size, pose):
    cv2 = _cv2()
    x0, y0 = _surface_point(rng, pose, 0.45, 0.8)
    a = rng.uniform(0, math.pi)
    length = rng.uniform(0.45, 0.7) * pose.scale
    t = np.linspace(-0.5, 0.5, 24)
    bend = rng.uniform(-0.15, 0.15) * length
    pts = np.stack([x0 + t * length * math.cos(a) - bend * (t ** 2 - 0.25) * math.sin(a),
                    y0 + t * length * math.sin(a) + bend * (t ** 2 - 0.25) * math.cos(a)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, thickness=2)
    groove = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)
    img += (0.30 if rng.random() < 0.5 else -0.30) * groove[..., None]
    return mask.astype(bool)


def _dent(rng, img, size, pose):
    x0, y0 = _surface_point(rng, pose)
    rad = rng.uniform(0.09, 0.14) * pose.scale
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = (x - x0) / rad, (y - y0) / rad
    d2 = dx ** 2 + dy ** 2
    bowl = np.exp(-2.5 * d2)
    a = rng.uniform(0, 2 * math.pi)
    img += (0.5 * (dx * math.cos(a) + dy * math.sin(a)) * bowl - 0.15 * bowl)[..., None]
    return d2 <= 1.0


def _stain(rng, img, size, pose):
    x0, y0 = _surface_point(rng, pose)
    rad = rng.uniform(0.10, 0.16) * pose.scale
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.hypot(x - x0, y - y0) / rad
    blob = (d + 0.35 * _smooth_noise(rng, size, 4)) < 1.0
    colour = np.array([0.55, 0.32, 0.12]) if rng.random() < 0.5 else np.array([0.2, 0.2, 0.14])
    alpha = 0.55 * blob[..., None]
    img[:] = img * (1 - alpha) + colour * alpha
    return blob


def _missing_hole(rng, size, pose):
    k = int(rng.integers(N_HOLES))
    img = _good(rng, size, pose, skip_hole=k)
    hx, hy = list(_hole_centres(pose))[k]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return img, np.hypot(x - hx, y - hy) <= 0.11 * pose.scale


def make_part(seed: int, size: int = 256, defect: Optional[str] = None):
    """(RGB uint8 [size,size,3], mask bool [size,size]) for one seeded part."""
    if defect is not None and defect not in DEFECTS:
        from .errors import UserInputError
        raise UserInputError(f"defect {defect!r}: choose one of {', '.join(DEFECTS)}")
    rng = np.random.default_rng(seed)
    pose = _random_pose(rng, size)
    if defect == "missing_hole":
        img, mask = _missing_hole(rng, size, pose)
    else:
        img = _good(rng, size, pose)
        mask = np.zeros((size, size), bool)
        if defect is not None:
            mask = {"scratch": _scratch, "dent": _dent, "stain": _stain}[defect](rng, img, size, pose)
    img = img + rng.normal(0, 0.007, img.shape)  # sensor noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def write_dataset(out: Path, n_train=10, n_good=4, n_defect=3, size=224, seed=2024) -> int:
    """MVTec-style folders: train/good, test/<kind>, ground_truth/<kind>. Returns #files."""
    cv2 = _cv2()
    out = Path(out)
    jobs = [("train/good", None, i) for i in range(n_train)]
    jobs += [("test/good", None, i) for i in range(n_good)]
    jobs += [(f"test/{d}", d, i) for d in DEFECTS for i in range(n_defect)]
    n = 0
    for k, (folder, defect, i) in enumerate(jobs):
        img, mask = make_part(seed + 1000 * k, size, defect)
        (out / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / folder / f"{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
        n += 1
        if defect is not None:
            (out / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / "ground_truth" / defect / f"{i:03d}_mask.png"),
                        mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            n += 1
    return n


if __name__ == "__main__":
    import sys
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "careg_edge/demo_data/flange")
    print(f"{write_dataset(target)} files written to {target}")
