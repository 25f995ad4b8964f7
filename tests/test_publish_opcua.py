"""Verdicts as OPC UA variables: our asyncua server on loopback, read back by an asyncua client."""
from __future__ import annotations

import math
import socket
import threading
from datetime import timezone

import pytest
from click.testing import CliRunner

from careg_edge import live
from careg_edge.cli import cli
from careg_edge.profile import Profile
from careg_edge.publish import open_publishers
from careg_edge.publish.opcua import NAMESPACE, VARIABLES, node_id
from line_peers import free_port, wait_until
from test_live import FakeInspector, enrolled, fake, write_folder  # noqa: F401

pytest.importorskip("asyncua")
from asyncua.sync import Client  # noqa: E402


class Reader:
    def __init__(self, port, line="L1", product="gear"):
        self.c = Client(f"opc.tcp://127.0.0.1:{port}/careg-edge/", timeout=5)
        self.c.connect()
        self.ns = self.c.get_namespace_index(NAMESPACE)
        self.line, self.product = line, product

    def node(self, var):
        return self.c.get_node(f"ns={self.ns};s={node_id(self.line, self.product, var)}")

    def read(self, var):
        return self.node(var).read_value()

    def close(self):
        self.c.disconnect()


def summary(frames=0, defects=0, unreadable=0):
    s = live.Summary(source="test", frames=frames, defects=defects, unreadable=unreadable)
    for ms in (10.0, 20.0, 30.0, 40.0):
        s.latency.add(ms)
    return s


def test_variables_show_the_latest_verdict_and_counters():
    port = free_port()
    pubs = open_publishers(opcua=f":{port}", line="L1", product="gear")
    reader = None
    try:
        reader = Reader(port)
        assert reader.read("Health") == "starting" and reader.read("Frame") == -1
        rec = {"ts": "2026-03-04T05:06:07.089Z", "source": "camera:0", "frame": 41, "score": 0.75,
               "threshold": 0.5, "decision": "defect"}
        pubs.publish(rec, None, None, summary(frames=42, defects=3, unreadable=1))
        assert wait_until(lambda: reader.read("Frame") == 41, 5)
        assert reader.read("Verdict") == "defect" and reader.read("IsDefect") is True
        assert reader.read("Score") == pytest.approx(0.75) and reader.read("Threshold") == pytest.approx(0.5)
        assert (reader.read("FramesTotal"), reader.read("Defects"), reader.read("Unreadable")) == (42, 3, 1)
        assert reader.read("Health") == "running" and reader.read("Source") == "camera:0"
        t = reader.read("CaptureTime")
        assert (t.year, t.month, t.day, t.second, t.microsecond) == (2026, 3, 4, 7, 89000)
        assert reader.read("LatencyP50Ms") == pytest.approx(20.0, rel=0.01)
        assert reader.read("LatencyP99Ms") == pytest.approx(40.0, rel=0.01)
        # An unreadable frame keeps the last score but counts and shows its verdict.
        pubs.publish({"ts": rec["ts"], "source": "camera:0", "frame": 42, "decision": "unreadable",
                      "error": "x"}, None, None, summary(frames=42, defects=3, unreadable=2))
        assert wait_until(lambda: reader.read("Frame") == 42, 5)
        assert reader.read("Verdict") == "unreadable" and reader.read("IsDefect") is False
        assert reader.read("Unreadable") == 2 and reader.read("Score") == pytest.approx(0.75)
        # Clients read; they cannot write the line's verdict.
        with pytest.raises(Exception, match="BadUserAccessDenied|BadNotWritable"):
            reader.node("Verdict").write_value("ok")
        browsed = {n.read_browse_name().Name for n in reader.c.get_node(
            f"ns={reader.ns};s=L1.gear").get_children()}
        assert browsed == set(VARIABLES)
    finally:
        if reader:
            reader.close()
        pubs.close(None)


def test_run_with_opcua_counts_every_frame(tmp_path):
    insp = FakeInspector(delay=0.02)
    prof = insp.enroll([write_folder(tmp_path / "g", 4, 0) / f"good_{i}.png" for i in range(4)])
    d = write_folder(tmp_path / "batch", n_good=30, n_bad=10, seed=2)
    port = free_port()
    opts = live.LiveOptions(publish=open_publishers(opcua=f"127.0.0.1:{port}", line="L2", product="cap"))
    src = live.open_source(images=str(d))
    out = open(tmp_path / "out.jsonl", "w")
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("s", live.run_live(src, insp, {"p": prof}, out, opts)))
    reader = Reader(port, "L2", "cap")
    try:
        t.start()
        seen = set()
        assert wait_until(lambda: seen.add(reader.read("FramesTotal")) or not t.is_alive(), 20)
        assert wait_until(lambda: reader.read("FramesTotal") == 40, 5)
        assert len(seen) > 2  # the counter moved while the run was going
        assert reader.read("Defects") == done["s"].defects == 10
        assert reader.read("Frame") == 39 and 0 < reader.read("FramesPerSecond") < 200
        assert math.isfinite(reader.read("LatencyP99Ms"))
    finally:
        t.join(30)
        reader.close()
        opts.publish.close(done.get("s"))
        out.close()


def test_busy_port_is_one_line(enrolled, tmp_path):
    d = write_folder(tmp_path / "b", n_good=1, n_bad=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--images", str(d),
                                     "--opcua", f":{port}"])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert f"--opcua 127.0.0.1:{port}: cannot listen there" in r.output
