"""Verdicts to MQTT, checked against a real Mosquitto on loopback (skipped without one)."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from careg_edge.cli import cli
from careg_edge.errors import UserInputError
from careg_edge.publish import parse_endpoint, plain_name
from careg_edge.publish.mqtt import MqttPublisher, topics
from line_peers import Mosquitto, Subscriber, free_port, mosquitto, wait_until  # noqa: F401
from test_live import enrolled, fake, lines, write_folder  # noqa: F401

pytest.importorskip("paho.mqtt.client")
T = topics("L1", "gear")


def rec(i, decision="ok"):
    return {"ts": "2026-01-01T00:00:00.000Z", "source": "test", "frame": i, "score": 0.1 * i,
            "threshold": 0.5, "decision": decision}


def publisher(port, **kw):
    return MqttPublisher("127.0.0.1", port, "L1", "gear", backoff=(0.1, 0.5), **kw)


def test_every_verdict_arrives_in_order_and_the_last_is_retained(mosquitto):
    sub = Subscriber(mosquitto.port)
    pub = publisher(mosquitto.port)
    try:
        assert pub.connected.wait(5)
        for i in range(20):
            pub.publish(rec(i, "defect" if i == 7 else "ok"), None, None, None)
        assert wait_until(lambda: len(sub.verdicts()) == 20, 10)
        got = sub.verdicts()
        assert [v["frame"] for v in got] == list(range(20))
        assert got[7]["decision"] == "defect" and got[19]["score"] == pytest.approx(1.9)
        assert sub.on(T["status"])[0] == ("online", False)
    finally:
        pub.close(None)
        sub.close()
    assert pub.sent == 20 and pub.dropped == 0 and pub.pending() == 0
    # A controller that subscribes later gets the last verdict and the status, retained.
    late = Subscriber(mosquitto.port, client_id="late", clean=True)
    try:
        assert wait_until(lambda: len(late.verdicts()) == 1 and late.on(T["status"]), 5)
        assert late.verdicts()[0]["frame"] == 19
        assert late.on(T["status"]) == [("offline", True)]
        assert [r for t, p, r in late.messages if t == T["verdict"]] == [True]
    finally:
        late.close()


def test_broker_restart_mid_run_loses_nothing(mosquitto):
    sub = Subscriber(mosquitto.port)
    pub = publisher(mosquitto.port, queue=50)
    try:
        assert pub.connected.wait(5)
        for i in range(10):
            pub.publish(rec(i), None, None, None)
        # The broker acknowledges before it forwards: let it forward, so that what is
        # checked below is what the publisher held through the restart, not what the broker did.
        assert wait_until(lambda: pub.pending() == 0 and len(sub.verdicts()) == 10, 5)
        mosquitto.stop()
        assert wait_until(lambda: not pub.connected.is_set(), 5)
        for i in range(10, 35):
            pub.publish(rec(i), None, None, None)
        time.sleep(0.3)
        assert pub.pending() == 25 and pub.sent == 10  # held while the broker is away
        mosquitto.start()
        assert wait_until(lambda: pub.pending() == 0, 15), pub.pending()
        assert wait_until(lambda: {v["frame"] for v in sub.verdicts()} >= set(range(35)), 15), \
            sorted(set(range(35)) - {v["frame"] for v in sub.verdicts()})
    finally:
        pub.close(None)
        sub.close()
    frames = [v["frame"] for v in sub.verdicts()]
    assert sorted(set(frames)) == list(range(35))
    # Duplicates are allowed (QoS 1 is at-least-once): the restarted broker re-sends what its
    # store held for the subscriber, and re-subscribing delivers the retained verdict again.
    assert pub.dropped == 0 and pub.sent == 35


def test_queue_bound_drops_the_oldest_while_the_broker_is_away(tmp_path):
    broker = Mosquitto(tmp_path)
    if broker.binary is None:
        pytest.skip("no mosquitto binary (Debian: apt-get install mosquitto)")
    pub = publisher(broker.port, queue=5)  # nothing listens yet: paho keeps retrying
    try:
        for i in range(12):
            pub.publish(rec(i), None, None, None)
        assert pub.pending() == 5 and pub.dropped == 7
        try:
            broker.start()
        except RuntimeError as e:
            pytest.skip(f"mosquitto could not start: {e}")
        sub = Subscriber(broker.port, client_id="bound", clean=True)
        assert wait_until(lambda: pub.pending() == 0, 15)
        # The subscriber may arrive after some verdicts were delivered; the retained one is the last.
        assert wait_until(lambda: sub.verdicts() and sub.verdicts()[-1]["frame"] == 11, 5)
        assert {v["frame"] for v in sub.verdicts()} <= set(range(7, 12))
        sub.close()
    finally:
        pub.close(None)
        broker.stop()
    assert pub.sent == 5 and pub.dropped == 7


def test_old_verdicts_expire_from_the_queue():
    pub = publisher(free_port(), queue=100, max_age_s=0.2)
    try:
        for i in range(3):
            pub.publish(rec(i), None, None, None)
        assert wait_until(lambda: pub.dropped == 3, 3) and pub.pending() == 0
    finally:
        pub.close(None)


def test_run_publishes_each_frame_like_its_json_line(mosquitto, enrolled, tmp_path):
    d = write_folder(tmp_path / "batch", n_good=3, n_bad=2, seed=3)
    out = tmp_path / "out.jsonl"
    sub = Subscriber(mosquitto.port)
    try:
        r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--images", str(d),
                                     "--jsonl", str(out), "--mqtt", f"127.0.0.1:{mosquitto.port}",
                                     "--line", "L1", "--product", "gear"])
        assert r.exit_code == 0, r.output
        expected = lines(out.read_text())
        assert wait_until(lambda: len(sub.verdicts()) == 5, 20)  # a loaded 2-core machine can take >5 s
        assert sub.verdicts() == expected
        assert sorted(v["decision"] for v in expected) == ["defect", "defect", "ok", "ok", "ok"]
        assert all(t == T["verdict"] for t, _, _ in sub.messages if t.endswith("verdict"))
    finally:
        sub.close()


def test_names_and_endpoints_are_checked():
    assert parse_endpoint(":1884", "--mqtt") == ("127.0.0.1", 1884)
    assert parse_endpoint("broker.plant", "--mqtt", default_port=1883) == ("broker.plant", 1883)
    assert parse_endpoint("10.0.0.5:8883", "--mqtt") == ("10.0.0.5", 8883)
    for bad in ("host:0", "host:x", ":70000", "a b:1"):
        with pytest.raises(UserInputError, match="--mqtt"):
            parse_endpoint(bad, "--mqtt", default_port=1883)
    assert plain_name("line-3.a_b", "--line") == "line-3.a_b"
    for bad in ("a/b", "#", "+", "", "x" * 65, "../etc", "a b"):
        with pytest.raises(UserInputError, match="--line"):
            plain_name(bad, "--line")


@pytest.mark.parametrize("args, needle", [
    (["--mqtt", "localhost:notaport"], "--mqtt localhost:notaport"),
    (["--mqtt", ":1883", "--line", "a/b"], "--line 'a/b'"),
    (["--mqtt", ":1883", "--product", "x#"], "--product 'x#'"),
    (["--line", "L1"], "--line: only used with --mqtt, --opcua or --web"),
])
def test_bad_line_options_are_one_line(enrolled, tmp_path, args, needle):
    d = write_folder(tmp_path / "b", n_good=1, n_bad=0)
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--images", str(d)] + args)
    assert r.exit_code != 0 and needle in r.output and "Traceback" not in r.output, r.output
