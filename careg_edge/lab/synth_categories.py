"""Procedural *normal* product categories for registration training.

CAReg learns to register by seeing many categories; the real datasets on a CPU
machine give only a few. These categories are drawn from a seed with NumPy +
OpenCV (no third-party images) and differ clearly from each other in shape,
material and symmetry. The bundled demo's flange (synth_parts.py) is NOT among
them on purpose: the demo must stay a held-out check of a trained encoder.

Every image of a category shows the same product design (the layout is fixed by
the category name); what varies per image is what varies on a line: pose
(rotation ±180° for round parts, less for parts that arrive roughly aligned,
shift, scale), lighting direction and brightness, surface texture phase and
sensor noise. Round parts carry one asymmetric feature (keyway, stamp) so that
their pose is defined and a registering STN has a unique answer.

    make_category("gear", n=200, size=224, seed=0) -> uint8 [n, 224, 224, 3]
    python -m careg_edge.lab.synth_categories --sheet docs/img/synthetic_categories.png
"""
from __future__ import annotations

import argparse
import math
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np

# Order matters: `careg-edge train --synthetic N` takes the first N.
CATEGORIES = ("gear", "pcb", "plate", "bottle", "knurl", "bracket", "washer")


def _cv2():
    import cv2
    return cv2


@dataclass(frozen=True)
class _Spec:
    draw: Callable          # (rng, size) -> (rgb float32 [S,S,3], alpha float32 [S,S])
    max_rotation: float     # degrees of per-image pose rotation
    background: Tuple[float, float, float]


# ---------------------------------------------------------------- helpers
def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std noise with about `cells` blobs across: a small random
    grid upsampled (far cheaper than blurring a full-size field)."""
    cv2 = _cv2()
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    n = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return (n - n.mean()) / (n.std() + 1e-6)


def _brushed(rng, size: int, strength: float) -> np.ndarray:
    """Machining marks along x: per-row noise, smoothed a little, random phase per image."""
    cv2 = _cv2()
    rows = cv2.GaussianBlur(rng.standard_normal((size, 1)).astype(np.float32), (1, 0), 0.8)
    return 1.0 + strength * np.repeat(rows, size, axis=1)


def _pts(xy, size: int) -> np.ndarray:
    """Unit-square coordinates -> int32 pixel points with 4 fractional bits (cv2 shift=4)."""
    return np.round(np.asarray(xy, np.float64) * size * 16).astype(np.int32)


def _pix(xy, size: int) -> tuple:
    """One unit-square point -> cv2 point tuple (with the same 4 fractional bits)."""
    return tuple(int(v) for v in _pts(xy, size))


def _layer(size: int):
    return np.zeros((size, size), np.float32)


def _fill_poly(mask, xy, size, value=1.0):
    _cv2().fillPoly(mask, [_pts(xy, size)], value, lineType=16, shift=4)


def _circle(mask, c, r, size, value=1.0, thickness=-1):
    cv2 = _cv2()
    cv2.circle(mask, _pix(c, size), int(round(r * size * 16)), value,
               thickness if thickness < 0 else max(1, int(round(thickness * size))), 16, 4)


def _round_rect(mask, x0, y0, x1, y1, r, size, value=1.0):
    """Filled rectangle with rounded corners (slots, plates) in unit coordinates."""
    _fill_poly(mask, [(x0 + r, y0), (x1 - r, y0), (x1 - r, y1), (x0 + r, y1)], size, value)
    _fill_poly(mask, [(x0, y0 + r), (x1, y0 + r), (x1, y1 - r), (x0, y1 - r)], size, value)
    for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
        _circle(mask, (cx, cy), r, size, value)


def _layout_rng(name: str) -> np.random.Generator:
    # the product design is a property of the category, not of the seed
    return np.random.default_rng(zlib.crc32(name.encode()))


def _polar(size: int):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = (x + 0.5) / size - 0.5, (y + 0.5) / size - 0.5
    return np.hypot(dx, dy), np.arctan2(dy, dx)


# ---------------------------------------------------------------- categories
def _gear(rng, size):
    """Spur gear: 18 teeth, hub with a keyed bore, four lightening holes."""
    teeth, r_root, r_tip = 18, 0.34, 0.42
    t = np.linspace(0, 2 * math.pi, teeth * 8, endpoint=False)
    phase = (t * teeth / (2 * math.pi)) % 1.0
    # trapezoidal tooth profile: flank-tip-flank-root in each pitch
    prof = np.clip(np.minimum(phase, 1 - phase) * 4 - 0.4, 0, 1)
    r = r_root + (r_tip - r_root) * prof
    alpha = _layer(size)
    _fill_poly(alpha, np.stack([0.5 + r * np.cos(t), 0.5 + r * np.sin(t)], 1), size)
    for k in range(4):
        a = k * math.pi / 2 + math.pi / 4
        _circle(alpha, (0.5 + 0.2 * math.cos(a), 0.5 + 0.2 * math.sin(a)), 0.055, size, 0.0)
    _circle(alpha, (0.5, 0.5), 0.075, size, 0.0)
    _fill_poly(alpha, [(0.48, 0.5), (0.52, 0.5), (0.52, 0.385), (0.48, 0.385)], size, 0.0)  # keyway
    rr, _ = _polar(size)
    lathe = 1 + 0.05 * np.sin(rr * size * 1.7 + rng.uniform(0, 6.3))
    tone = np.where(rr < 0.13, 0.78, np.where(rr > 0.31, 0.6, 0.68)) * lathe
    return np.repeat(tone[..., None], 3, 2) * np.float32([0.95, 0.97, 1.0]), alpha


def _pcb(rng, size):
    """Green board: pad rows, an IC, traces, gold mounting holes, silkscreen corner mark."""
    cv2 = _cv2()
    lay = _layout_rng("pcb")
    alpha = _layer(size)
    _round_rect(alpha, 0.12, 0.2, 0.88, 0.8, 0.02, size)
    rgb = np.empty((size, size, 3), np.float32)
    rgb[:] = (0.12, 0.42, 0.2)
    copper = _layer(size)
    for _ in range(9):  # traces: axis-aligned polylines between pads
        x0, y0 = lay.uniform(0.18, 0.82), lay.uniform(0.25, 0.75)
        x1, y1 = lay.uniform(0.18, 0.82), lay.uniform(0.25, 0.75)
        pts = np.array([(x0, y0), (x1, y0), (x1, y1)])
        cv2.polylines(copper, [_pts(pts, size)], False, 1.0, max(1, size // 90), 16, 4)
    for i in range(8):  # two pad rows
        for y in (0.27, 0.73):
            x = 0.22 + i * 0.08
            _fill_poly(copper, [(x - 0.022, y - 0.03), (x + 0.022, y - 0.03),
                                (x + 0.022, y + 0.03), (x - 0.022, y + 0.03)], size)
    for c in ((0.17, 0.25), (0.83, 0.25), (0.17, 0.75), (0.83, 0.75)):
        _circle(copper, c, 0.03, size)
    rgb = np.where(copper[..., None] > 0.5, np.float32([0.75, 0.62, 0.3]), rgb)
    ic = _layer(size)
    _fill_poly(ic, [(0.4, 0.4), (0.64, 0.4), (0.64, 0.6), (0.4, 0.6)], size)
    rgb = rgb * (1 - ic[..., None]) + np.float32([0.09, 0.09, 0.1]) * ic[..., None]
    silk = _layer(size)
    cv2.polylines(silk, [_pts([(0.15, 0.4), (0.15, 0.23), (0.3, 0.23)], size)], False, 1.0,
                  max(1, size // 110), 16, 4)
    _circle(silk, (0.43, 0.43), 0.012, size)                   # pin-1 dot on the IC
    rgb = rgb * (1 - silk[..., None]) + 0.92 * silk[..., None]
    for c in ((0.17, 0.25), (0.83, 0.25), (0.17, 0.75), (0.83, 0.75)):
        _circle(alpha, c, 0.014, size, 0.0)                     # drilled holes
    return rgb * (1 + 0.04 * _smooth_noise(rng, size, 24))[..., None], alpha


def _plate(rng, size):
    """Machined rectangular plate: two long slots, four holes, a chamfered corner."""
    alpha = _layer(size)
    _fill_poly(alpha, [(0.14, 0.26), (0.8, 0.26), (0.86, 0.32), (0.86, 0.74), (0.14, 0.74)], size)
    _round_rect(alpha, 0.3, 0.36, 0.7, 0.43, 0.035, size, 0.0)
    _round_rect(alpha, 0.3, 0.57, 0.62, 0.64, 0.035, size, 0.0)
    for c in ((0.2, 0.32), (0.8, 0.68), (0.2, 0.68)):
        _circle(alpha, c, 0.028, size, 0.0)
    _circle(alpha, (0.77, 0.5), 0.045, size, 0.0)
    tone = 0.62 * _brushed(rng, size, 0.06)
    return np.repeat(tone[..., None], 3, 2) * np.float32([1.0, 0.99, 0.97]), alpha


def _bottle(rng, size):
    """Glass bottle against a bright backlight: body, shoulder, neck, cap, label."""
    alpha = _layer(size)
    body = [(0.36, 0.9), (0.64, 0.9), (0.64, 0.42), (0.56, 0.3), (0.55, 0.18), (0.45, 0.18),
            (0.44, 0.3), (0.36, 0.42)]
    _fill_poly(alpha, body, size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    glass = 0.3 + 0.35 * np.exp(-((x - 0.43) / 0.025) ** 2)        # specular stripe
    rgb = np.stack([glass * 0.55, glass * 0.8, glass * 0.45], -1)   # green glass
    cap, label = _layer(size), _layer(size)
    _fill_poly(cap, [(0.44, 0.1), (0.56, 0.1), (0.56, 0.19), (0.44, 0.19)], size)
    _fill_poly(label, [(0.36, 0.55), (0.64, 0.55), (0.64, 0.76), (0.36, 0.76)], size)
    stripe = ((y > 0.6) & (y < 0.63)).astype(np.float32)
    rgb = np.where(label[..., None] > 0.5,
                   np.float32([0.9, 0.86, 0.75]) * (1 - 0.6 * stripe[..., None]), rgb)
    rgb = np.where(cap[..., None] > 0.5, np.float32([0.7, 0.15, 0.12]), rgb)
    alpha = np.maximum(alpha, cap)
    return rgb * (1 + 0.02 * _smooth_noise(rng, size, 16))[..., None], alpha


def _knurl(rng, size):
    """Square tile with a diamond knurl inside a smooth rim and one plain index corner."""
    alpha = _layer(size)
    _round_rect(alpha, 0.15, 0.15, 0.85, 0.85, 0.04, size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    f = 2 * math.pi * 16
    phase = rng.uniform(0, 0.15)  # knurl pitch alignment varies between parts
    diamonds = np.abs(np.sin(f * (x + y + phase) / 2)) * np.abs(np.sin(f * (x - y) / 2))
    inner = (np.abs(x - 0.5) < 0.3) & (np.abs(y - 0.5) < 0.3) & ~((x > 0.62) & (y > 0.62))
    tone = np.where(inner, 0.35 + 0.4 * diamonds, 0.66)
    return np.repeat(tone[..., None], 3, 2) * np.float32([1.0, 0.96, 0.9]), alpha


def _bracket(rng, size):
    """Bent L bracket: two legs, three holes, a darker bend zone."""
    alpha = _layer(size)
    _fill_poly(alpha, [(0.2, 0.15), (0.38, 0.15), (0.38, 0.66), (0.84, 0.66), (0.84, 0.84),
                       (0.2, 0.84)], size)
    for c in ((0.29, 0.27), (0.29, 0.47), (0.72, 0.75)):
        _circle(alpha, c, 0.04, size, 0.0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bend = np.exp(-(((x - 0.33) ** 2 + (y - 0.7) ** 2) / 0.004))
    tone = (0.55 - 0.15 * bend) * _brushed(rng, size, 0.04).T   # brushed along the long leg
    return np.repeat(tone[..., None], 3, 2) * np.float32([0.9, 0.92, 1.0]), alpha


def _washer(rng, size):
    """Flat ring (bore ≥ half the diameter) with a stamped mark that fixes its pose."""
    cv2 = _cv2()
    rr, th = _polar(size)
    # anti-aliased ring: coverage ramps over one pixel at both edges
    alpha = np.clip((0.36 - rr) * size + 0.5, 0, 1) * np.clip((rr - 0.2) * size + 0.5, 0, 1)
    stamp = _layer(size)
    for i in range(3):  # three short radial dashes on one side
        a = -0.25 + 0.25 * i
        inner = (0.5 + 0.24 * math.cos(a), 0.5 + 0.24 * math.sin(a))
        outer = (0.5 + 0.32 * math.cos(a), 0.5 + 0.32 * math.sin(a))
        cv2.line(stamp, _pix(inner, size), _pix(outer, size), 1.0, max(1, size // 100), 16, 4)
    spin = 1 + 0.08 * np.cos(2 * th + rng.uniform(0, 6.3))     # anisotropic sheen of a polished ring
    tone = (0.7 * spin - 0.3 * stamp) * (1 + 0.03 * _smooth_noise(rng, size, 20))
    return np.repeat(tone[..., None], 3, 2) * np.float32([1.0, 0.93, 0.78]), alpha  # brass


_SPECS: Dict[str, _Spec] = {
    "gear": _Spec(_gear, 180.0, (0.2, 0.21, 0.23)),
    "pcb": _Spec(_pcb, 15.0, (0.82, 0.82, 0.8)),
    "plate": _Spec(_plate, 20.0, (0.14, 0.14, 0.16)),
    "bottle": _Spec(_bottle, 8.0, (0.92, 0.93, 0.95)),
    "knurl": _Spec(_knurl, 10.0, (0.18, 0.2, 0.26)),
    "bracket": _Spec(_bracket, 25.0, (0.3, 0.33, 0.3)),
    "washer": _Spec(_washer, 180.0, (0.1, 0.12, 0.2)),
}
assert tuple(_SPECS) == CATEGORIES  # noqa: S101 - module invariant, not input checking


# ---------------------------------------------------------------- one image
def _pose_matrix(rng, size: int, max_rotation: float) -> np.ndarray:
    """2x3 canonical -> image pixel map: rotate about the centre, scale ±6 %, shift ±5 %."""
    cv2 = _cv2()
    angle = rng.uniform(-max_rotation, max_rotation)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, rng.uniform(0.94, 1.06))
    m[:, 2] += rng.uniform(-0.05, 0.05, 2) * size
    return m


def make_image(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One good part of category `name` as uint8 [size, size, 3]."""
    cv2 = _cv2()
    spec = _SPECS[name]
    rgb, alpha = spec.draw(rng, size)
    m = _pose_matrix(rng, size, spec.max_rotation)
    flags = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rgb = cv2.warpAffine(np.ascontiguousarray(rgb, np.float32), m, (size, size), **flags)
    alpha = cv2.warpAffine(alpha, m, (size, size), **flags)[..., None]
    bg = np.float32(spec.background) * (1 + 0.05 * _smooth_noise(rng, size, 6))[..., None]
    img = bg * (1 - alpha) + rgb * alpha
    # light from a random direction, overall brightness and a slight colour cast
    a = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    shade = 1 + 0.2 * (math.cos(a) * ramp[None, :] + math.sin(a) * ramp[:, None])
    img = img * shade[..., None] * rng.uniform(0.9, 1.1) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    img = img + rng.normal(0, 0.01, img.shape).astype(np.float32)  # sensor noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_category(name: str, n: int, size: int, seed: int = 0) -> np.ndarray:
    """n good images of one synthetic category: uint8 [n, size, size, 3] (RGB).
    Image i depends only on (name, seed, i), so a longer set extends a shorter one."""
    if name not in _SPECS:
        from ..errors import UserInputError
        raise UserInputError(f"synthetic category {name!r} is unknown; choose one of "
                             f"{', '.join(CATEGORIES)}")
    if n < 0 or size < 16:
        from ..errors import UserInputError
        raise UserInputError(f"synthetic {name}: need n >= 0 and size >= 16 (got n={n}, size={size})")
    key = CATEGORIES.index(name)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = make_image(name, size, np.random.default_rng([seed, key, i]))
    return out


# ---------------------------------------------------------------- contact sheet
def contact_sheet(per_row: int = 5, size: int = 80, seed: int = 0) -> np.ndarray:
    """RGB uint8 sheet: one row per category (labelled), `per_row` images each."""
    cv2 = _cv2()
    label_w, pad = 90, 4
    rows = []
    for name in CATEGORIES:
        # drawn at twice the size and area-downscaled: the sensor noise averages out,
        # which keeps the PNG small without hiding the shapes
        imgs = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                for im in make_category(name, per_row, 2 * size, seed)]
        row = np.full((size + 2 * pad, label_w + per_row * (size + pad) + pad, 3), 255, np.uint8)
        cv2.putText(row, name, (6, size // 2 + pad + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0),
                    1, cv2.LINE_AA)
        for j, im in enumerate(imgs):
            x = label_w + j * (size + pad)
            row[pad:pad + size, x:x + size] = im
        rows.append(row)
    return np.concatenate(rows, 0)


def _main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m careg_edge.lab.synth_categories",
                                description="Synthetic normal categories for registration training.")
    p.add_argument("--sheet", metavar="PATH", required=True, help="write a labelled contact sheet PNG")
    p.add_argument("--per-row", type=int, default=5)
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    cv2 = _cv2()
    sheet = contact_sheet(a.per_row, a.size, a.seed)
    bgr = cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(a.sheet, bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"{a.sheet}: could not write the PNG (does the folder exist?)")
    print(f"{a.sheet}: {len(CATEGORIES)} categories x {a.per_row} images at {a.size} px")


if __name__ == "__main__":
    _main()
