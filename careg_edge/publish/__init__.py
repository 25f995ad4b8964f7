"""Results to the line: every verdict of `careg-edge run` goes to each publisher.

A publisher has two methods:
    publish(record, result, image, summary)   once per frame, from the inspection loop
    close(summary)                            once, when the run ends
`record` is the JSON line of that frame (careg_edge.live.RECORD_SCHEMA), `result` the
worst profile's Result (None for an unreadable frame), `image` the RGB frame that was
inspected (None when unreadable) and `summary` the run's live counters.

publish() is called on the inspection thread, so a publisher must return at once: it
hands the verdict to its own thread (MQTT sender, OPC UA server loop, web server) and
never waits on the network. A publisher that fails is reported once and then left out:
the line keeps being inspected whatever happens to a broker or a browser.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

from ..errors import UserInputError

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def plain_name(text: str, option: str) -> str:
    """A line or product name: it becomes an MQTT topic level and an OPC UA node id."""
    if not _PLAIN.match(text or ""):
        raise UserInputError(f"{option} {text!r}: use 1-64 letters, digits, '.', '_' or '-' "
                             f"(it names an MQTT topic level and OPC UA nodes)")
    return text


def parse_endpoint(text: str, option: str, default_port: Optional[int] = None,
                   default_host: str = "127.0.0.1") -> Tuple[str, int]:
    """'HOST:PORT', ':PORT' (localhost) or 'HOST' (default port) -> (host, port)."""
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = str(text), ""
    host = host.strip("[]") or default_host
    if not port and default_port is not None:
        return host, default_port
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not 0 < p < 65536 or any(c.isspace() for c in host):
        raise UserInputError(f"{option} {text}: expected HOST:PORT or :PORT with a port in 1-65535"
                             + (f", e.g. {option} :{default_port}" if default_port else ""))
    return host, p


class Fanout:
    """The publishers of one run, called as one."""

    def __init__(self, publishers: List[object], log=lambda m: None):
        self.publishers, self.log = list(publishers), log

    def publish(self, record, result, image, summary) -> None:
        for p in list(self.publishers):
            try:
                p.publish(record, result, image, summary)
            except Exception as e:  # noqa: BLE001 - a broken output never stops inspection
                self.log(f"{p.name}: stopped publishing ({type(e).__name__}: {e})")
                self.publishers.remove(p)
                self._close(p, None)  # free its port and threads now, not at exit

    def close(self, summary) -> None:
        for p in self.publishers:
            self._close(p, summary)

    def _close(self, p, summary) -> None:
        try:
            p.close(summary)
        except Exception as e:  # noqa: BLE001
            self.log(f"{p.name}: error while closing ({type(e).__name__}: {e})")


def open_publishers(mqtt=None, opcua=None, web=None, line="line1", product="part",
                    mqtt_queue=1000, log=lambda m: None) -> Optional[Fanout]:
    """Start what the options ask for; a bad option or a busy port fails here, before the source opens."""
    if not (mqtt or opcua or web):
        return None
    line, product = plain_name(line, "--line"), plain_name(product, "--product")
    pubs = []
    try:
        if mqtt:
            from .mqtt import MqttPublisher
            host, port = parse_endpoint(mqtt, "--mqtt", default_port=1883)
            pubs.append(MqttPublisher(host, port, line, product, queue=mqtt_queue, log=log))
        if opcua:
            from .opcua import OpcUaPublisher
            host, port = parse_endpoint(opcua, "--opcua", default_port=4840)
            pubs.append(OpcUaPublisher(host, port, line, product, log=log))
        if web:
            from ..webview import WebView
            host, port = parse_endpoint(web, "--web")
            pubs.append(WebView(host, port, line, product, log=log))
    except BaseException:
        Fanout(pubs).close(None)
        raise
    return Fanout(pubs, log)
