"""Real peers on loopback for the line-output tests: a Mosquitto broker we start and stop.

Debian's `mosquitto` package (`make test` installs it when run as root); without it
the tests that need a broker are skipped with the reason.
"""
from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout=10.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def mosquitto_binary():
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)


class Mosquitto:
    """One broker on 127.0.0.1:port with persistence, so a restart keeps sessions and retained messages."""

    def __init__(self, workdir: Path):
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.dir = workdir
        self.conf = workdir / "mosquitto.conf"
        # `user`: started as root, mosquitto would switch to user "mosquitto", which
        # cannot write its persistence file into our private temporary folder.
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             f"user {getpass.getuser()}\n"
                             f"persistence true\npersistence_location {workdir}/\n"
                             f"log_dest file {workdir}/mosquitto.log\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def accepting():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return self.proc.poll() is not None
        wait_until(accepting, 5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-300:]}")
        if not accepting():
            raise RuntimeError("mosquitto did not accept connections within 5 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto writes its persistence file on the way out
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    if mosquitto_binary() is None:
        pytest.skip("no mosquitto binary (Debian: apt-get install mosquitto; `make test` does it as root)")
    b = Mosquitto(tmp_path)
    try:
        b.start()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"mosquitto could not start: {e}")
    yield b
    b.stop()


class Subscriber:
    """A persistent-session QoS 1 subscriber: it gets what was published while it was away."""

    def __init__(self, port, topic="careg/#", client_id="careg-test-sub", clean=False):
        import paho.mqtt.client as mqtt
        self.messages, self.lock = [], threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.c.on_message = self._on_message
        self.ready = threading.Event()
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        if not self.ready.wait(5):
            raise RuntimeError("subscription not acknowledged within 5 s")

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def verdicts(self):
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/verdict")]

    def on(self, topic):
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
