"""`careg-edge serve`: inspection behind Triton Inference Server, through PyTriton.

PyTriton starts the `tritonserver` binary it ships and binds our Python callable as
model MODEL_NAME. Triton does the HTTP/gRPC endpoints, request checking (an input
of the wrong shape or dtype is refused by Triton before it reaches us), dynamic
batching across clients and the Prometheus metrics.

Why refused items are answered with verdict "error" instead of an exception:
PyTriton fails every request of a dynamic batch when the callable raises, so one
bad request would take the good requests of other cameras down with it. Each item
is checked on its own; the others of its batch are scored as usual.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..errors import MissingDependency
from . import HEATMAP, MAX_IMAGE_BYTES, MODEL_NAME
from .engine import inspect_items
from .protocol import RequestError, decode_image, outputs_of, product_name, stack

VENV_HINT = ("make it with `make serve-venv` (bench/make_serve_venv.sh) and run "
             "build/serve-venv/bin/careg-edge serve ...")


def need_pytriton():
    """PyTriton's module, or one clear error saying how to get it."""
    try:
        import pytriton.triton  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"serve: PyTriton (nvidia-pytriton, needs numpy<2) is not importable "
                                f"in {sys.executable} ({e.name or e}); {VENV_HINT}") from None
    return pytriton


def libpython_env() -> None:
    """The tritonserver binary PyTriton starts loads libpython of this interpreter:
    put its directory on LD_LIBRARY_PATH before the server process is spawned."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and libdir not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))


class Handler:
    """The callable bound into Triton: a dynamic batch of requests -> one response each."""

    def __init__(self, insp, registry, outputs=None, max_image_bytes: int = MAX_IMAGE_BYTES):
        self.insp, self.registry, self.outputs = insp, registry, outputs
        self.max_image_bytes = int(max_image_bytes)
        self.answered = self.refused = 0

    def _items(self, req):
        """(product, Profile, rgb) or the error text, for each item of one request."""
        try:
            images, products = np.asarray(req["image"]), np.asarray(req["product"])
        except KeyError as e:
            return [f"request: input {e} missing"]
        if len(images) != len(products):
            return [f"request: {len(images)} images but {len(products)} product names"] * len(images)
        items = []
        for img, prod in zip(images.reshape(len(images), -1), products.reshape(len(products), -1)):
            try:
                if img.size != 1 or prod.size != 1:
                    raise RequestError("request: image and product take one element per item")
                name = product_name(prod[0])
                profile = self.registry.get(name)
                items.append((name, profile, decode_image(img[0], self.max_image_bytes)))
            except RequestError as e:
                items.append(str(e))
        return items

    def __call__(self, requests) -> List[Dict[str, np.ndarray]]:
        t0 = time.perf_counter()
        per_req = [self._items(r) for r in requests]
        good = [it for items in per_req for it in items if not isinstance(it, str)]
        try:
            results = iter(inspect_items(self.insp, [(p, rgb) for _, p, rgb in good]))
            failure = ""
        except Exception as e:  # noqa: BLE001 - answer every item, keep serving
            results, failure = iter(()), f"internal error: {type(e).__name__}: {e}"
        total_ms = (time.perf_counter() - t0) * 1000
        responses = []
        for items in per_req:
            outs = []
            for it in items:
                if isinstance(it, str) or failure:
                    err = it if isinstance(it, str) else failure
                    self.refused += 1
                    if self.outputs is not None:
                        self.outputs.refused(err)
                    outs.append(outputs_of(error=err))
                    continue
                name, _, rgb = it
                r = next(results)
                self.answered += 1
                if self.outputs is not None:
                    self.outputs.verdict(name, r, rgb, total_ms)
                outs.append(outputs_of(r))
            responses.append(stack(outs))
        return responses


class TritonService:
    """Triton started with one model bound; `stop()` ends both."""

    def __init__(self, handler: Handler, address: str = "127.0.0.1", port: int = 8000,
                 max_batch: int = 8, queue_delay_us: int = 2000, log=lambda m: None):
        need_pytriton()
        libpython_env()
        import logging

        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
        self.address, self.port, self.log = address, int(port), log
        self.metrics_port = self.port + 2
        # Triton's own log (a table per start, a line per model event) goes to a file
        # unless --verbose: the console keeps careg-edge's one start line and errors.
        self.log_file = None
        if not os.environ.get("CAREG_VERBOSE"):
            logging.getLogger("pytriton").setLevel(logging.ERROR)
            import tempfile
            self.log_file = Path(tempfile.gettempdir()) / f"careg-serve-{self.port}-triton.log"
        cfg = TritonConfig(http_address=address, http_port=self.port, grpc_address=address,
                           grpc_port=self.port + 1, metrics_address=address,
                           metrics_port=self.metrics_port, allow_gpu_metrics=False,
                           exit_on_error=True, log_verbose=0, log_file=self.log_file)
        self.triton = Triton(config=cfg)
        b = bytes
        self.triton.bind(
            model_name=MODEL_NAME, infer_func=handler,
            inputs=[Tensor(name="image", dtype=b, shape=(1,)), Tensor(name="product", dtype=b, shape=(1,))],
            outputs=[Tensor(name="verdict", dtype=b, shape=(1,)),
                     Tensor(name="score", dtype=np.float32, shape=(1,)),
                     Tensor(name="threshold", dtype=np.float32, shape=(1,)),
                     Tensor(name="reason", dtype=b, shape=(1,)),
                     Tensor(name="error", dtype=b, shape=(1,)),
                     Tensor(name="heatmap", dtype=np.float32, shape=(HEATMAP, HEATMAP))],
            config=ModelConfig(max_batch_size=int(max_batch),
                               batcher=DynamicBatcher(max_queue_delay_microseconds=int(queue_delay_us))),
            strict=True)
        self.stopped = threading.Event()

    @property
    def urls(self) -> Dict[str, str]:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return {"http": f"http://{host}:{self.port}", "grpc": f"{host}:{self.port + 1}",
                "metrics": f"http://{host}:{self.metrics_port}/metrics",
                "model": f"http://{host}:{self.port}/v2/models/{MODEL_NAME}"}

    def start(self) -> "TritonService":
        self.triton.run()   # starts tritonserver, loads the model, returns when it is ready
        return self

    def wait(self, poll_s: float = 1.0) -> None:
        """Block until stop() or until Triton dies."""
        while not self.stopped.wait(poll_s):
            if not self.triton.is_alive():
                self.log("serve: Triton stopped")
                return

    def stop(self) -> None:
        self.stopped.set()
        self.triton.stop()
