"""Verdicts to an MQTT broker (paho-mqtt), surviving a broker that goes away.

Topics (one line, one product per run):
    careg/<line>/<product>/verdict   the JSON line of each frame, QoS 1, retained
                                     (a controller that subscribes late gets the last verdict)
    careg/<line>/<product>/status    "online" / "offline", retained; "offline" is also the
                                     broker's last will, so a crashed run shows as offline

Why our own queue in front of paho's: paho refuses new messages when its queue is
full, but on a line the newest verdict matters most. Here the queue drops the
*oldest* verdict when it is full, or when a verdict has waited longer than `max_age_s`,
and counts what it dropped. At most `window` verdicts are handed to paho at a time;
paho keeps those until the broker acknowledges them and re-sends them after a
reconnect, so a broker restart loses nothing the bound allows (a verdict whose
acknowledgement was lost arrives twice: QoS 1 is at-least-once).
"""
from __future__ import annotations

import collections
import json
import threading
import time

from ..errors import UserInputError

TOPIC_PREFIX = "careg"


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise UserInputError("--mqtt: needs paho-mqtt; pip install 'careg-edge[line]'") from None
    return mqtt


def topics(line: str, product: str) -> dict:
    base = f"{TOPIC_PREFIX}/{line}/{product}"
    return {"verdict": f"{base}/verdict", "status": f"{base}/status"}


class MqttPublisher:
    name = "mqtt"

    def __init__(self, host: str, port: int, line: str, product: str, queue: int = 1000,
                 max_age_s: float = 3600.0, window: int = 10, backoff=(0.5, 30.0), log=lambda m: None):
        mqtt = _paho()
        self.topics, self.log = topics(line, product), log
        self.endpoint = f"{host}:{port}"
        self.bound, self.max_age_s = int(queue), float(max_age_s)
        self.window = max(1, min(window, self.bound))
        self.queue = collections.deque()      # (t_enqueued, payload) not yet handed to paho
        self.inflight = []                    # MQTTMessageInfo handed to paho, not yet acked
        self.dropped = self.sent = 0
        self.connected = threading.Event()
        self._wake, self._stop, self._lock = threading.Event(), threading.Event(), threading.Lock()
        self._was_down = self._told = False  # _told: the first connect or failure was logged
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"careg-edge-{line}-{product}")
        c.max_inflight_messages_set(self.window)
        c.reconnect_delay_set(min_delay=backoff[0], max_delay=backoff[1])  # exponential back-off
        c.will_set(self.topics["status"], "offline", qos=1, retain=True)
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = lambda *a: self._wake.set()  # an ack frees a window slot
        self.client = c
        # connect_async + loop_start: paho's thread keeps retrying, so a broker that is
        # down when the run starts is no reason to stop the line.
        c.connect_async(host, port, keepalive=15)
        c.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="careg-mqtt", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------ inspection thread
    def publish(self, record, result, image, summary) -> None:
        payload = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self.queue.append((time.monotonic(), payload))
            while self.queue and len(self.queue) + len(self.inflight) > self.bound:
                self.queue.popleft()
                self.dropped += 1
        self._wake.set()

    def close(self, summary) -> None:
        # Give a reachable broker a moment to take what is queued; never hang the exit.
        deadline = time.monotonic() + 5.0
        while self.pending() and self.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=2)
        if self.connected.is_set():
            try:
                self.client.publish(self.topics["status"], "offline", qos=1, retain=True).wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass  # the broker went away meanwhile: the last will says "offline" instead
        self.client.disconnect()
        self.client.loop_stop()
        left = self.pending()
        if left or self.dropped:
            self.log(f"mqtt {self.endpoint}: {self.sent} verdicts delivered, {left} not delivered, "
                     f"{self.dropped} dropped (queue bound {self.bound})")

    def pending(self) -> int:
        with self._lock:
            return len(self.queue) + len(self.inflight)

    # ------------------------------------------------------------ paho thread
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            self.log(f"mqtt {self.endpoint}: connection refused ({reason_code})")
            return
        client.publish(self.topics["status"], "online", qos=1, retain=True)
        if self._was_down:
            self.log(f"mqtt {self.endpoint}: reconnected; {self.pending()} verdicts to send")
        elif not self._told:
            self.log(f"mqtt {self.endpoint}: publishing to {self.topics['verdict']}")
        self._told = True
        self.connected.set()
        self._wake.set()

    def _on_connect_fail(self, client, userdata):
        if not self._told:
            self.log(f"mqtt {self.endpoint}: cannot connect; retrying with back-off and "
                     f"queueing up to {self.bound} verdicts")
        self._told = self._was_down = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        if self.connected.is_set() and not self._stop.is_set():
            self.log(f"mqtt {self.endpoint}: broker lost; queueing up to {self.bound} verdicts")
        self._was_down = True
        self.connected.clear()

    # ------------------------------------------------------------ sender thread
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            with self._lock:
                done = [i for i in self.inflight if i.is_published()]
                self.sent += len(done)
                self.inflight = [i for i in self.inflight if not i.is_published()]
                self._expire()
                if not self.connected.is_set():
                    continue
                while self.queue and len(self.inflight) < self.window:
                    _, payload = self.queue.popleft()
                    self.inflight.append(self.client.publish(
                        self.topics["verdict"], payload, qos=1, retain=True))

    def _expire(self) -> None:
        old = time.monotonic() - self.max_age_s
        while self.queue and self.queue[0][0] < old:
            self.queue.popleft()
            self.dropped += 1
