"""Registration diagnostics of a training checkpoint, one category at a time,
beside the untrained model (same backbone and size, identity STNs).

    python bench/train_diagnostics.py runs/train_reg/last.ckpt \
        --excluded ../shared/data/mpdd/metal_plate --n 16 -o runs/train_reg/by_category.json

Rows: each training category's held-out images (the last `holdout` of its normal
images, as the training run kept them out), the pooled held-out set (the run's
val_* values), and, with --excluded, the first N normal images (train/good) of a
category the run left out. Values: val_cosine, val_slope, val_corr
(lab/train/diagnostics.py; slope −1 = each image's rotation undone).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from careg_edge.encoder.checkpoint import load
from careg_edge.lab.synth_categories import CATEGORIES, make_category
from careg_edge.lab.train import TrainConfig, build, discover, evaluate, load_images, normaliser


def held_out(cfg: TrainConfig) -> dict:
    """The images the run held out: the last cfg.holdout of every category."""
    held = {name: load_images(files[-cfg.holdout:], cfg.image_size)
            for name, files in (discover(cfg.roots, cfg.exclude, min_images=1).items()
                                if cfg.roots else [])}
    for name in CATEGORIES[:cfg.synthetic]:
        arr = make_category(name, cfg.synthetic_images, cfg.image_size, cfg.seed)[-cfg.holdout:]
        held[f"synthetic/{name}"] = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    return held


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--excluded", type=Path, action="append", default=[],
                    help="a category folder (MVTec layout) the run left out (repeatable)")
    ap.add_argument("--n", type=int, default=16, help="normal images per excluded category")
    ap.add_argument("-o", "--out", type=Path, help="write the table as JSON here too")
    ap.add_argument("--device", default="auto", help="auto (CUDA when torch sees it), cpu or cuda[:N]")
    args = ap.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
                          else args.device)
    ck = load(args.checkpoint)
    cfg = TrainConfig(**{k: v for k, v in ck.config.items() if k in TrainConfig.__dataclass_fields__})
    if cfg.holdout <= 0:
        raise SystemExit(f"{args.checkpoint}: trained without --holdout; nothing was held out")
    torch.manual_seed(cfg.seed)
    models = {"untrained": build(cfg)[0].eval().to(device), "trained": ck.encoder.eval().to(device)}
    norm = normaliser(ck.encoder.trunk, device)
    held = held_out(cfg)
    sets = dict(held)
    for folder in args.excluded:
        files = discover([folder], min_images=1)[f"{folder.name}/{folder.name}"][:args.n]
        sets[f"{folder.name} (excluded)"] = load_images(files, cfg.image_size)
    rows = {name: {label: evaluate(enc, {name: imgs}, norm, cfg) for label, enc in models.items()}
            for name, imgs in sets.items()}
    rows["pooled held-out"] = {label: evaluate(enc, held, norm, cfg) for label, enc in models.items()}
    for name, row in rows.items():
        print(f"{name:42s} " + " | ".join(
            f"{label}: cos {v['val_cosine']:.3f} slope {v['val_slope']:+.3f} corr {v['val_corr']:+.3f}"
            for label, v in row.items()))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
