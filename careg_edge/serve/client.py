"""Client side: send encoded frames to a careg-edge Triton server (tritonclient.http).

`ServeClient.inspect(product, image)` -> `Reply`; a refused item (verdict "error")
and an error Triton returns (wrong shape, or an exported-repository model refusing
it) both raise `ServeRefused` with the server's message, so a caller sees one kind
of error whichever server it talks to.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union
from urllib.parse import urlparse

import numpy as np

from ..errors import CaregError, MissingDependency, UserInputError
from . import MODEL_NAME
from .protocol import product_name


class ServeRefused(CaregError):
    """The server answered this request with an error (bad image, unknown product, ...)."""


class ServerUnavailable(CaregError):
    """The server cannot be reached or is not ready."""
    exit_code = 3


@dataclass
class Reply:
    verdict: str
    score: float
    threshold: float
    reason: str
    heatmap: Optional[np.ndarray] = None

    @property
    def is_defect(self) -> bool:
        return self.verdict == "defect"


def _http():
    try:
        import tritonclient.http as http
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise MissingDependency("--server: needs tritonclient; pip install 'tritonclient[http]' "
                                "(build/serve-venv has it: make serve-venv)") from None
    return http, InferenceServerException


def encode_png(rgb: np.ndarray) -> bytes:
    """RGB uint8 -> PNG bytes (lossless, so the server scores exactly these pixels)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def server_address(url: str) -> str:
    """'http://host:port', 'host:port' -> 'host:port' (what tritonclient.http takes)."""
    u = urlparse(url if "://" in url else f"http://{url}")
    if u.scheme not in ("http", "") or not u.hostname or u.path not in ("", "/"):
        raise UserInputError(f"--server {url}: expected http://HOST:PORT (Triton's HTTP port)")
    try:
        port = u.port or 8000
    except ValueError:
        raise UserInputError(f"--server {url}: port is not a number in 1-65535") from None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{host}:{port}"


class ServeClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", model: str = MODEL_NAME,
                 timeout_s: float = 60.0, concurrency: int = 1):
        http, self._exc = _http()
        self.url, self.model = server_address(url), model
        self._http = http
        self.client = http.InferenceServerClient(self.url, connection_timeout=timeout_s,
                                                 network_timeout=timeout_s, concurrency=concurrency)

    def ready(self) -> bool:
        try:
            return bool(self.client.is_model_ready(self.model))
        except Exception:  # noqa: BLE001 - connection refused, reset, ...: not ready
            return False

    def wait_ready(self, timeout_s: float) -> None:
        import time
        end = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > end:
                raise ServerUnavailable(f"--server http://{self.url}: model '{self.model}' not ready "
                                        f"after {timeout_s:.0f} s (is `careg-edge serve` running?)")
            time.sleep(0.2)

    def _inputs(self, products: Sequence[str], images: Sequence[bytes]):
        http = self._http
        img = np.array([[bytes(b)] for b in images], dtype=object)
        prod = np.array([[p.encode("utf-8")] for p in products], dtype=object)
        ins = [http.InferInput("image", list(img.shape), "BYTES"),
               http.InferInput("product", list(prod.shape), "BYTES")]
        ins[0].set_data_from_numpy(img, binary_data=True)
        ins[1].set_data_from_numpy(prod, binary_data=True)
        return ins

    def inspect_many(self, products: Sequence[str], images: Sequence[Union[bytes, np.ndarray]],
                     heatmap: bool = False) -> List[Union[Reply, ServeRefused]]:
        """One request of several items; a refused item comes back as a ServeRefused
        in its place (the others are still answered)."""
        for p in products:
            product_name(p)
        data = [encode_png(im) if isinstance(im, np.ndarray) else im for im in images]
        names = ["verdict", "score", "threshold", "reason", "error"] + (["heatmap"] if heatmap else [])
        outs = [self._http.InferRequestedOutput(n, binary_data=True) for n in names]
        try:
            res = self.client.infer(self.model, self._inputs(products, data), outputs=outs)
        except self._exc as e:
            status = str(e.status() or "")
            if status in ("", "None") or "connect" in str(e.message()).lower():
                raise ServerUnavailable(f"--server http://{self.url}: {e.message()}") from None
            raise ServeRefused(f"server refused the request: {e.message()}") from None
        except OSError as e:
            raise ServerUnavailable(f"--server http://{self.url}: {e}") from None
        got = {n: res.as_numpy(n) for n in names}
        replies: List[Union[Reply, ServeRefused]] = []
        for i in range(len(data)):
            s = lambda n: got[n][i][0].decode("utf-8", "replace")  # noqa: E731
            if s("verdict") == "error":
                replies.append(ServeRefused(f"server refused item {i}: {s('error')}"))
                continue
            replies.append(Reply(s("verdict"), float(got["score"][i][0]), float(got["threshold"][i][0]),
                                 s("reason"), got["heatmap"][i] if heatmap else None))
        return replies

    def inspect(self, product: str, image: Union[bytes, np.ndarray], heatmap: bool = False) -> Reply:
        r = self.inspect_many([product], [image], heatmap)[0]
        if isinstance(r, ServeRefused):
            raise r
        return r

    def close(self) -> None:
        self.client.close()


class RemoteInspector:
    """What `run --server URL --product NAME` uses in place of an Inspector: the same
    inspect/inspect_batch calls, answered by the server, so the live loop (JSON
    lines, summary, --save-defects, --mqtt/--opcua/--web) is the local one.
    The anomaly map of each Result is the server's small heatmap resized to the frame."""

    def __init__(self, url: str, product: str, timeout_s: float = 60.0, wait_s: float = 10.0):
        try:
            self.product = product_name(product)
        except UserInputError as e:
            raise UserInputError(f"--product: {e}") from None
        self.client = ServeClient(url, timeout_s=timeout_s)
        self.client.wait_ready(wait_s)

    def inspect(self, image, profile=None):
        return self.inspect_batch([image], profile)[0]

    def inspect_batch(self, images, profile=None):
        import time

        import cv2

        from ..decision import decide
        t = time.perf_counter()
        replies = self.client.inspect_many([self.product] * len(images), list(images), heatmap=True)
        ms = (time.perf_counter() - t) * 1000 / max(1, len(images))
        results = []
        for im, r in zip(images, replies):
            if isinstance(r, ServeRefused):
                raise r
            h, w = np.asarray(im).shape[:2]
            amap = cv2.resize(r.heatmap, (w, h), interpolation=cv2.INTER_LINEAR)
            results.append(decide(r.score, amap, r.threshold, {"server": ms}, r.is_defect, r.reason))
        return results
