"""Heatmap overlays and the files written for a failing frame (--save-defects)."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import numpy as np

from .errors import UserInputError
from .sources import Frame, _cv2


def heatmap_overlay(rgb: np.ndarray, anomaly_map: np.ndarray, threshold: float,
                    mask: Optional[np.ndarray] = None, alpha: float = 0.45) -> np.ndarray:
    """BGR image: the frame with the anomaly map blended on top and the mask outlined.

    Colours are fixed relative to the threshold (threshold = middle of the colour
    scale), so the same colour means the same thing on every frame and every line.
    """
    cv2 = _cv2()
    H, W = rgb.shape[:2]
    amap = np.asarray(anomaly_map, np.float32)
    if amap.shape != (H, W):
        amap = cv2.resize(amap, (W, H), interpolation=cv2.INTER_LINEAR)
    scale = 2.0 * threshold if threshold > 0 else max(float(amap.max()), 1e-6)
    u8 = np.clip(amap / scale * 255.0, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(u8, cv2.COLORMAP_JET)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    out = cv2.addWeighted(bgr, 1 - alpha, heat, alpha, 0)
    if mask is not None and np.any(mask):
        m = np.asarray(mask).astype(np.uint8)
        if m.shape != (H, W):
            m = cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, W // 200))
    return out


def put_label(bgr: np.ndarray, text: str, defect: bool) -> np.ndarray:
    cv2 = _cv2()
    scale = max(0.35, bgr.shape[1] / 900)
    colour = (0, 0, 255) if defect else (0, 200, 0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(bgr, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(bgr, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return bgr


def _write_png(path: Path, img: np.ndarray) -> None:
    # Temp file + rename: a consumer watching the folder never sees half a PNG.
    cv2 = _cv2()
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise UserInputError(f"{path}: could not encode PNG")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def save_defect(out_dir: Path, frame: Frame, rgb: np.ndarray, result) -> List[str]:
    """frame PNG, heatmap overlay PNG and mask PNG (0/255) for one failing frame."""
    cv2 = _cv2()
    stamp = datetime.fromtimestamp(frame.ts, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    stem = f"{stamp}_f{frame.id:06d}" + (f"_{Path(frame.name).stem}" if frame.name else "")
    mask = np.asarray(result.mask).astype(bool) if result.mask is not None else \
        np.asarray(result.anomaly_map) >= float(result.threshold)
    paths = [out_dir / f"{stem}_frame.png", out_dir / f"{stem}_overlay.png", out_dir / f"{stem}_mask.png"]
    _write_png(paths[0], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    over = heatmap_overlay(rgb, result.anomaly_map, float(result.threshold), mask)
    _write_png(paths[1], put_label(over, f"DEFECT {float(result.score):.3g} > {float(result.threshold):.3g}", True))
    _write_png(paths[2], mask.astype(np.uint8) * 255)
    return [str(p) for p in paths]
