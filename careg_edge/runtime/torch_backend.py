"""The torch runtime: a training checkpoint or an ImageNet baseline, in eager torch.

    TorchRuntime("runs/x/last.ckpt")            careg-checkpoint written by `careg-edge train`
    TorchRuntime("imagenet:resnet50v2")         ImageNet trunk + identity STNs (paper's baseline)
    TorchRuntime("imagenet:mobilenet_v2", input_size=256)
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from ..errors import MissingDependency, UserInputError
from .base import OUTPUT_NAMES, Runtime


def _torch():
    try:
        import torch
    except ImportError:
        raise MissingDependency("the torch runtime needs torch: pip install 'careg-edge[train]'") from None
    return torch


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, model, input_size=224, threads: int = 0, device: str = "cpu"):
        torch = _torch()
        if threads and threads > 0:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.encoder = self._build(str(model), input_size).to(self.device).eval()
        self.meta = self.encoder.meta() if not hasattr(self, "_meta") else self._meta

    def _build(self, model: str, input_size):
        if model.startswith("imagenet:"):
            from ..encoder.careg import imagenet_encoder
            size = (input_size, input_size) if np.isscalar(input_size) else tuple(input_size)
            return imagenet_encoder(model.split(":", 1)[1], input_size=size)
        path = Path(model)
        if not path.is_file():
            raise UserInputError(f"{model}: no such checkpoint; give a .ckpt written by "
                                 "`careg-edge train` or imagenet:<backbone>")
        from ..encoder.checkpoint import load
        ckpt = load(path)
        self._meta = ckpt.meta  # keeps the stored extra fields (training provenance)
        return ckpt.encoder

    def infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        torch = _torch()
        batch = np.asarray(batch)
        h, w = self.meta.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, h, w) or batch.dtype != np.float32:
            raise UserInputError(f"encoder input: expected float32 [B, 3, {h}, {w}], got "
                                 f"{batch.dtype} {list(batch.shape)}")
        with torch.no_grad():
            outs = self.encoder(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        return {n: o.detach().cpu().numpy() for n, o in zip(OUTPUT_NAMES, outs)}

    def info(self) -> Dict[str, str]:
        torch = _torch()
        d = super().info()
        d.update(device=str(self.device), threads=str(torch.get_num_threads()),
                 stn_mode=self.meta.stn_mode)
        return d
