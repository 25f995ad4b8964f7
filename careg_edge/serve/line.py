"""Served verdicts to the line: the same publishers as `run` (careg_edge.publish).

MQTT keeps its topic per product (careg/LINE/PRODUCT/verdict): one publisher per
product, opened when that product's first verdict comes. The OPC UA variables and
the web view show every product of the server under the product name "all"; each
record names its product in `source` ("serve:PRODUCT") and in `profiles`.
"""
from __future__ import annotations

import threading
import time
from typing import Dict, Optional

from ..live import Summary, iso
from ..publish import open_publishers

ALL = "all"


class ServeOutputs:
    def __init__(self, mqtt=None, mqtt_queue=1000, opcua=None, web=None, line="line1",
                 log=lambda m: None):
        self.mqtt, self.mqtt_queue, self.line, self.log = mqtt, mqtt_queue, line, log
        self.summary = Summary(source="serve")
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._frame = 0
        self.shared = open_publishers(opcua=opcua, web=web, line=line, product=ALL, log=log) \
            if (opcua or web) else None
        self.per_product: Dict[str, object] = {}
        if mqtt:  # a bad --mqtt endpoint fails at start, not on the first request
            from ..publish import parse_endpoint
            parse_endpoint(mqtt, "--mqtt", default_port=1883)

    @property
    def active(self) -> bool:
        return bool(self.mqtt or self.shared)

    def _mqtt_for(self, product: str):
        pub = self.per_product.get(product)
        if pub is None and self.mqtt:
            pub = open_publishers(mqtt=self.mqtt, line=self.line, product=product,
                                  mqtt_queue=self.mqtt_queue, log=self.log)
            self.per_product[product] = pub
        return pub

    def verdict(self, product: str, result, image, total_ms: float) -> None:
        """One answered item (called on the inference thread; publishers return at once)."""
        with self._lock:
            s = self.summary
            s.frames += 1
            s.defects += bool(result.is_defect)
            s.latency.add(total_ms)
            s.inference.add(sum(result.timings.values()))
            s.elapsed_s = time.monotonic() - self.t0
            self._frame += 1
            dec = "defect" if result.is_defect else "ok"
            rec = {"ts": iso(time.time()), "source": f"serve:{product}", "frame": self._frame,
                   "score": round(float(result.score), 6), "threshold": round(float(result.threshold), 6),
                   "decision": dec,
                   "latency_ms": dict({k: round(float(v), 3) for k, v in result.timings.items()},
                                      total=round(total_ms, 3)),
                   "profiles": [{"profile": product, "score": round(float(result.score), 6),
                                 "threshold": round(float(result.threshold), 6), "decision": dec}]}
            for pub in (self._mqtt_for(product), self.shared):
                if pub is not None:
                    pub.publish(rec, result, image, s)

    def refused(self, error: str) -> None:
        """One refused item: counted as unreadable, shown on the page and OPC UA."""
        with self._lock:
            self.summary.unreadable += 1
            self._frame += 1
            rec = {"ts": iso(time.time()), "source": "serve", "frame": self._frame,
                   "decision": "unreadable", "error": error}
            if self.shared is not None:
                self.shared.publish(rec, None, None, self.summary)

    def close(self, summary: Optional[Summary] = None) -> None:
        for pub in list(self.per_product.values()) + [self.shared]:
            if pub is not None:
                pub.close(summary or self.summary)
