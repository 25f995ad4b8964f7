"""The Python-backend models of the exported Triton repository (repo_export.py).

Each model folder's model.py is one line that imports a class from here, so the
container runs the installed careg-edge (its compiled core included) and a fix to
this file needs no re-export. `triton_python_backend_utils` exists only inside
Triton's Python backend; tests put a stand-in in sys.modules.

careg_decode: image (BYTES) -> input (FP32 [3, H, W], the encoder's normalised
    input) + size (INT32 [2], the image's own h, w). A request that is not a
    readable image, or is too big, fails alone with Triton's error.
careg_score: the encoder outputs + size + product -> verdict, score, threshold,
    reason, error, heatmap: one compiled-road call per product over the whole batch
    (serve.engine.score, the call Inspector.inspect_batch makes). Profiles come
    from the folder named by the model parameter `profiles_dir` (relative to the
    model folder) and are reloaded when a file changes (serve.registry).
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Dict, List

import numpy as np

import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by Triton)

from ..encoder_meta import EncoderMeta
from ..errors import CaregError
from ..preprocess import encoder_input
from . import HEATMAP, MAX_IMAGE_BYTES
from .engine import score
from .protocol import RequestError, decode_image, outputs_of, product_name, stack

META_FILE = "encoder_meta.json"   # in each Python model's folder, written at export
OUTPUT_NAMES = ("feat1", "feat2", "feat3", "theta", "theta_inv")


def _model_dir(args) -> Path:
    return Path(args["model_repository"])


def _param(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _log(msg: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_info(msg)


def _error(msg: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(msg))


def _input(request, name: str) -> np.ndarray:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        raise RequestError(f"request: input {name!r} missing")
    return t.as_numpy()


def _meta(args) -> EncoderMeta:
    return EncoderMeta.from_dict(json.loads((_model_dir(args) / META_FILE).read_text()))


class DecodeModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.meta = _meta(args)
        self.max_bytes = int(_param(config, "max_image_bytes", str(MAX_IMAGE_BYTES)))

    def execute(self, requests):
        responses = []
        for req in requests:
            try:
                images = _input(req, "image").reshape(-1)
                rgbs = [decode_image(b, self.max_bytes) for b in images]
            except RequestError as e:
                responses.append(_error(str(e)))
                continue
            sizes = np.array([r.shape[:2] for r in rgbs], np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input", encoder_input(rgbs, self.meta)),
                pb_utils.Tensor("size", sizes)]))
        return responses

    def finalize(self):
        pass


class ScoreModel:
    def initialize(self, args):
        from ..pipeline import check_profile
        from .registry import ProfileRegistry
        config = json.loads(args["model_config"])
        folder = _model_dir(args) / _param(config, "profiles_dir", "profiles")
        poll = float(_param(config, "poll_s", "1.0"))
        self.registry = ProfileRegistry([folder], check=partial(check_profile, _meta(args)), log=_log,
                                        poll_s=poll).start()

    def _request_items(self, req):
        """(outputs of this request, profiles, sizes) or raises RequestError."""
        products = _input(req, "product").reshape(-1)
        sizes = _input(req, "size").reshape(-1, 2)
        out = {n: _input(req, n) for n in OUTPUT_NAMES}
        if not all(len(v) == len(products) for v in list(out.values()) + [sizes]):
            raise RequestError("request: inputs disagree on the batch size")
        profiles = [self.registry.get(product_name(p)) for p in products]
        return out, profiles, [tuple(int(v) for v in s) for s in sizes]

    def execute(self, requests):
        responses: List[object] = [None] * len(requests)
        batch: Dict[str, List[np.ndarray]] = {n: [] for n in OUTPUT_NAMES}
        profiles, sizes, owners = [], [], []
        for i, req in enumerate(requests):
            try:
                out, profs, szs = self._request_items(req)
            except RequestError as e:
                responses[i] = _error(str(e))
                continue
            for n in OUTPUT_NAMES:
                batch[n].append(out[n])
            profiles += profs
            sizes += szs
            owners += [i] * len(profs)
        if owners:
            try:
                results = score({n: np.concatenate(v) for n, v in batch.items()}, profiles, sizes)
            except CaregError as e:
                for i in set(owners):
                    responses[i] = _error(f"scoring failed: {e}")
                return responses
            for i in sorted(set(owners)):
                items = stack([outputs_of(r, size=HEATMAP) for r, o in zip(results, owners) if o == i])
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(n, items[n]) for n in ("verdict", "score", "threshold", "reason",
                                                           "error", "heatmap")])
        return responses

    def finalize(self):
        self.registry.stop()
