"""The bundled encoder's model card: what it is, and scores it must reproduce.

`careg_edge/models/default.card.json` sits beside `default.onnx` and records its sha256,
its encoder hash, the backbone, the training data mix and recipe (or "none" for plain
ImageNet features), the commit, and a *reference slice*: a fixed handful of MPDD
metal_plate images, enrolled and scored with fixed settings when the card was written.
The test suite re-runs the slice and compares (tests/test_model_card.py), so a changed
encoder, estimator or scoring path cannot slip through silently.

    python -m careg_edge.lab.model_card write --data ../shared/data/mpdd/metal_plate \\
        --model careg_edge/models/default.onnx --about docs/model_card_about.json

The card is a JSON document with a format version and a sha256 over its own canonical
body; a card that fails either check is refused with a message saying how to rewrite it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from ..container import atomic_write_bytes, sha256_file
from ..errors import FormatError

CARD_KIND, CARD_VERSION = "careg-model-card", 1
# The slice: names under metal_plate/; small enough to run in seconds on a CPU.
SLICE_SUPPORT = ("train/good/000.png", "train/good/010.png")
SLICE_TEST = ("test/good/000.png", "test/good/005.png", "test/good/010.png",
              "test/defect_type_unknown/000.png", "test/defect_type_unknown/010.png",
              "test/defect_type_unknown/020.png", "test/defect_type_unknown/030.png")
SLICE_SETTINGS = {"estimator": "patchcore", "augment": "none", "seed": 0, "image_score": "max"}
# ORT on another x86 CPU may sum in another order; 1e-3 relative leaves room for that
# and still catches any change of weights, features or scoring (those move scores by %).
SCORE_RTOL = 1e-3


def card_path(model: Path) -> Path:
    return Path(model).with_suffix(".card.json")


def _body_digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def slice_scores(model: str, data: Path) -> List[float]:
    """Enroll SLICE_SUPPORT, score SLICE_TEST with SLICE_SETTINGS; raw image scores."""
    from ..pipeline import Inspector
    from ..imageio import read_image
    insp = Inspector(model=model, backend="onnxruntime", threads=1)
    prof = insp.enroll([read_image(Path(data) / n) for n in SLICE_SUPPORT], **SLICE_SETTINGS)
    return [float(r.score) for r in insp.inspect_batch([read_image(Path(data) / n)
                                                         for n in SLICE_TEST], prof)]


def write_card(model: Path, data: Path, about: dict) -> Path:
    from ..runtime.onnxruntime_backend import OnnxRuntime
    meta = OnnxRuntime(str(model), device="cpu", threads=1).meta
    body = {"kind": CARD_KIND, "format_version": CARD_VERSION, "file": Path(model).name,
            "sha256": sha256_file(model), "encoder_hash": meta.encoder_hash,
            "backbone": meta.backbone, "input_size": list(meta.input_size),
            "trained": bool(meta.trained), "commit": _commit(), **about,
            "reference_slice": {"dataset": "MPDD metal_plate (../shared/data/mpdd/metal_plate)",
                                "support": list(SLICE_SUPPORT), "test": list(SLICE_TEST),
                                "settings": SLICE_SETTINGS, "rtol": SCORE_RTOL,
                                "scores": slice_scores(str(model), data)}}
    doc = dict(body, body_sha256=_body_digest(body))
    out = card_path(model)
    atomic_write_bytes(out, (json.dumps(doc, indent=1) + "\n").encode())
    return out


def read_card(model: Path) -> dict:
    path = card_path(model)
    fix = f"rewrite it with `python -m careg_edge.lab.model_card write --model {model} ...`"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: unreadable model card ({e.__class__.__name__}); {fix}") from None
    if doc.get("kind") != CARD_KIND or doc.get("format_version") != CARD_VERSION:
        raise FormatError(f"{path}: not a version-{CARD_VERSION} model card; {fix}")
    body = {k: v for k, v in doc.items() if k != "body_sha256"}
    if doc.get("body_sha256") != _body_digest(body):
        raise FormatError(f"{path}: model card checksum mismatch (edited or corrupt); {fix}")
    return doc


def _commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m careg_edge.lab.model_card")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="Compute the reference slice and write MODEL.card.json.")
    w.add_argument("--model", type=Path, required=True)
    w.add_argument("--data", type=Path, required=True, help="MPDD metal_plate folder.")
    w.add_argument("--about", type=Path, required=True,
                   help="JSON with training_data, recipe, selection (free-form, recorded as is).")
    s = sub.add_parser("show", help="Print a card after checking it.")
    s.add_argument("--model", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "write":
            print(write_card(a.model, a.data, json.loads(a.about.read_text())))
        else:
            print(json.dumps(read_card(a.model), indent=1))
    except (FormatError, OSError, ValueError) as e:
        print(f"model_card: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
