"""The latest verdict, score, counters and health as OPC UA variables (asyncua server).

A controller reads (or subscribes to) a few fixed variables instead of parsing JSON.
The server runs its own asyncio loop in a thread; publish() only stores the newest
snapshot and wakes that loop, so the inspection thread never waits on OPC UA, and
when frames come faster than clients read, the variables jump to the newest frame
(the values of one update always belong to the same frame).
Namespace and node ids: docs/line-outputs.md.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import threading
import time
from datetime import datetime, timezone

from ..errors import UserInputError

NAMESPACE = "urn:careg-edge"
SOURCE_LOST = "source lost"

# name -> (OPC UA type name, initial value); order is the browse order
VARIABLES = {
    "Verdict": ("String", ""),          # ok | defect | unreadable | learning ("" before the first frame)
    "IsDefect": ("Boolean", False),
    "Score": ("Double", math.nan),
    "Threshold": ("Double", math.nan),
    "Frame": ("Int64", -1),             # frame id of the values above
    "CaptureTime": ("DateTime", datetime(1970, 1, 1, tzinfo=timezone.utc)),
    "Source": ("String", ""),
    "FramesTotal": ("UInt64", 0),
    "Defects": ("UInt64", 0),
    "Unreadable": ("UInt64", 0),
    "Dropped": ("UInt64", 0),
    "FramesPerSecond": ("Double", 0.0),  # over the last 5 s
    "LatencyP50Ms": ("Double", math.nan),
    "LatencyP99Ms": ("Double", math.nan),
    "Health": ("String", "starting"),    # starting | running | stopped | source lost
    "LastRecord": ("String", ""),        # the frame's JSON line
}


def node_id(line: str, product: str, var: str) -> str:
    return f"{line}.{product}.{var}"


def _ua():
    try:
        from asyncua import Server, ua
    except ImportError:
        raise UserInputError("--opcua: needs asyncua; pip install 'careg-edge[line]'") from None
    return Server, ua


class OpcUaPublisher:
    name = "opcua"

    def __init__(self, host: str, port: int, line: str, product: str, log=lambda m: None):
        Server, self.ua = _ua()
        if not os.environ.get("CAREG_VERBOSE"):  # asyncua logs tracebacks for what we report in one line
            logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        self.line, self.product, self.log = line, product, log
        self.url = f"opc.tcp://{host}:{port}/careg-edge/"
        self.nodes, self._latest, self._kicked = {}, None, False
        self._lock = threading.Lock()  # _latest/_kicked: written by both threads
        self._times = collections.deque()  # capture times of the last 5 s, for FramesPerSecond
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="careg-opcua", daemon=True)
        self._thread.start()
        self._wake = None
        try:
            self._run(self._start(Server), 60)
        except OSError as e:
            self._halt()
            raise UserInputError(f"--opcua {host}:{port}: cannot listen there "
                                 f"({e.strerror or e}); pick another port or host") from None
        log(f"opcua: serving {self.url} (namespace {NAMESPACE})")

    def _run(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, Server):
        ua = self.ua
        self.server = Server()
        await self.server.init()
        self.server.set_endpoint(self.url)
        self.server.set_server_name("careg-edge")
        self.server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await self.server.register_namespace(NAMESPACE)
        obj = await self.server.nodes.objects.add_object(
            ua.NodeId(f"{self.line}.{self.product}", ns), ua.QualifiedName(f"{self.line}.{self.product}", ns))
        for var, (typ, value) in VARIABLES.items():
            vt = getattr(ua.VariantType, typ)
            self.nodes[var] = await obj.add_variable(
                ua.NodeId(node_id(self.line, self.product, var), ns), ua.QualifiedName(var, ns),
                ua.Variant(value, vt))  # read-only: add_variable grants clients read access only
        self._wake = asyncio.Event()
        await self.server.start()
        self._updater = asyncio.ensure_future(self._update_loop())

    # ------------------------------------------------------------ inspection thread
    def publish(self, record, result, image, summary) -> None:
        now = time.monotonic()
        self._times.append(now)
        while self._times and self._times[0] < now - 5.0:
            self._times.popleft()
        span = max(now - self._times[0], 1e-3) if len(self._times) > 1 else 0.0
        snap = {"Verdict": record["decision"], "IsDefect": record["decision"] == "defect",
                "Frame": int(record["frame"]), "Source": record["source"],
                "CaptureTime": datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc),
                "LastRecord": json.dumps(record, separators=(",", ":")), "Health": "running",
                "FramesPerSecond": (len(self._times) - 1) / span if span else 0.0}
        if "score" in record:
            snap.update(Score=float(record["score"]), Threshold=float(record["threshold"]))
        if summary is not None:
            snap.update(FramesTotal=summary.frames, Defects=summary.defects, Unreadable=summary.unreadable,
                        Dropped=summary.dropped, LatencyP50Ms=summary.latency.percentile(50),
                        LatencyP99Ms=summary.latency.percentile(99))
        self._post(snap)

    def close(self, summary) -> None:
        if self._wake is not None and self.loop.is_running():
            lost = summary is not None and summary.error is not None
            self._post({"Health": SOURCE_LOST if lost else "stopped"})
            try:
                self._run(self._stop(), 10)
            except Exception:  # noqa: BLE001 - stopping is best effort
                pass
        self._halt()

    # ------------------------------------------------------------ server loop
    def _post(self, snap: dict) -> None:
        # Merge into the pending snapshot and wake the loop once, however many frames arrive.
        with self._lock:
            self._latest = {**(self._latest or {}), **snap}
            if self._kicked:
                return
            self._kicked = True
        self.loop.call_soon_threadsafe(self._wake.set)

    async def _update_loop(self):
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                self._kicked = False
                snap, self._latest = self._latest or {}, None
            await self._write(snap)

    async def _write(self, snap: dict):
        for var, value in snap.items():
            vt = getattr(self.ua.VariantType, VARIABLES[var][0])
            await self.nodes[var].write_value(self.ua.Variant(value, vt))

    async def _stop(self):
        self._updater.cancel()
        if self._latest:
            await self._write(self._latest)
        await self.server.stop()

    def _halt(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
