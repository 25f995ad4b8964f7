"""`run --web`: the live page over HTTP, and in headless Chromium (skipped without it)."""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from careg_edge import live
from careg_edge.cli import cli
from careg_edge.webview import KEEP_FRAMES, WebView
from headless import Browser, chromium_binary
from line_peers import free_port, wait_until
from test_live import FakeInspector, enrolled, fake, write_folder, write_video  # noqa: F401


def result(h=96, w=128, blob=False):
    amap = np.full((h, w), 0.05, np.float32)
    if blob:
        amap[20:50, 40:80] = 1.0
    return SimpleNamespace(anomaly_map=amap, threshold=0.5, mask=amap > 0.5)


def record(i, decision="ok", score=0.05):
    return {"ts": "2026-01-01T00:00:00.000Z", "source": "test", "frame": i, "score": score,
            "threshold": 0.5, "decision": decision}


def get(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path)  # sent as written: no client-side normalisation of "..", "%2e"
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), body


@pytest.fixture
def view():
    v = WebView("127.0.0.1", free_port(), "L1", "gear")
    yield v
    v.close(None)


def test_state_and_frames_follow_the_published_verdicts(view):
    s = live.Summary(source="test")
    grey = np.full((96, 128, 3), 128, np.uint8)
    for i in range(KEEP_FRAMES + 3):
        bad = i == KEEP_FRAMES + 1
        s.frames += 1
        s.defects += bad
        s.latency.add(10.0 * (i + 1))
        view.publish(record(i, "defect" if bad else "ok", 1.0 if bad else 0.05), result(blob=bad), grey, s)
    status, ctype, body = get(view.port, "/state")
    st = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert (st["frames"], st["defects"], st["threshold"], st["health"]) == (9, 1, 0.5, "running")
    assert [f["frame"] for f in st["frames_shown"]] == list(range(8, 8 - KEEP_FRAMES, -1))
    assert st["latency_ms"]["p50"] == pytest.approx(50.0, rel=0.01)
    assert [x[0] for x in st["scores"]] == list(range(9)) and st["scores"][7][2] == "defect"
    # The overlay of the defect frame: red where the map is hot, grey (blended with blue) elsewhere.
    status, ctype, jpg = get(view.port, "/frame/7.jpg")
    assert status == 200 and ctype == "image/jpeg"
    bgr = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == (96, 128, 3)
    hot, cold = bgr[30:40, 55:65].mean((0, 1)), bgr[80:90, 5:15].mean((0, 1))
    assert hot[2] > hot[0] + 40 and cold[0] > cold[2] + 40
    assert get(view.port, "/frame/0.jpg")[0] == 404  # no longer among the kept frames


def test_unreadable_frames_are_shown_without_an_image(view):
    s = live.Summary(source="test", unreadable=1)
    view.publish({"ts": "t", "source": "test", "frame": 0, "decision": "unreadable", "error": "bad"},
                 None, None, s)
    st = json.loads(get(view.port, "/state")[2])
    assert st["unreadable"] == 1 and st["frames_shown"][0]["has_image"] is False
    assert st["threshold"] is None and get(view.port, "/frame/0.jpg")[0] == 404


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2fwebview.py",
                                  "/web/index.html", "/webview.py", "//etc/passwd", "/frame/../index.html",
                                  "/index.html/../../webview.py", "/frame/1.jpg/.."])
def test_nothing_outside_the_page_is_served(view, path):
    status, _, body = get(view.port, path)
    assert status == 404 and b"import" not in body and b"root:" not in body


def test_only_reads_and_short_paths(view):
    assert get(view.port, "/")[0] == 200 and b"EventSource" in get(view.port, "/")[2]
    assert get(view.port, "/index.html")[0] == 200
    assert get(view.port, "/", "HEAD")[2] == b""
    assert get(view.port, "/state", "POST")[0] == 405
    assert get(view.port, "/" + "a" * 300)[0] == 414
    # A body sent with a refused request is not read as a second request on the same connection.
    c = http.client.HTTPConnection("127.0.0.1", view.port, timeout=5)
    c.request("POST", "/state", body=b"GET /webview.py HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.getresponse()
    assert r.status == 405 and r.getheader("Connection") == "close"
    r.read()
    c.close()


def test_events_stream_pushes_each_new_state(view):
    c = http.client.HTTPConnection("127.0.0.1", view.port, timeout=5)
    c.request("GET", "/events")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"

    def next_event():
        while True:
            line = r.fp.readline().decode()
            if line.startswith("data: "):
                return json.loads(line[6:])
    assert next_event()["frames"] == 0  # the current state at once
    s = live.Summary(source="test", frames=1)
    view.publish(record(0), result(), np.zeros((96, 128, 3), np.uint8), s)
    ev = next_event()
    assert ev["frames"] == 1 and ev["frames_shown"][0]["frame"] == 0
    c.close()


def test_web_binds_to_localhost_unless_told_and_a_busy_port_is_one_line(enrolled, tmp_path):
    from careg_edge.publish import parse_endpoint
    assert parse_endpoint(":8080", "--web") == ("127.0.0.1", 8080)
    d = write_folder(tmp_path / "b", n_good=1, n_bad=0)
    port = free_port()
    busy = WebView("127.0.0.1", port, "L1", "gear")
    try:
        r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--images", str(d), "--web", f":{port}"])
    finally:
        busy.close(None)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert f"--web 127.0.0.1:{port}: cannot listen there" in r.output, r.output


# ----------------------------------------------------------------- in a real browser
@pytest.mark.skipif(chromium_binary() is None,
                    reason="no chromium (Debian: apt-get install chromium; `make test` does it as root)")
def test_page_in_headless_chromium_updates_live(tmp_path):
    insp = FakeInspector(delay=0.03)
    prof = insp.enroll([write_folder(tmp_path / "g", 4, 0) / f"good_{i}.png" for i in range(4)])
    video = write_video(tmp_path / "line.avi", 150, bad_every=4)
    port = free_port()
    opts = live.LiveOptions(publish=live_publishers(port), max_frames=150)
    src = live.open_source(video=str(video))
    out = open(os.devnull, "w")
    done = {}
    run = threading.Thread(target=lambda: done.setdefault("s", live.run_live(src, insp, {"p": prof}, out, opts)))
    run.start()
    browser = None
    try:
        try:
            browser = Browser()
        except (OSError, RuntimeError, TimeoutError) as e:
            pytest.skip(f"chromium could not start: {e}")
        browser.goto(f"http://127.0.0.1:{port}/")
        assert browser.wait_for("document.body.dataset.updates >= 1", 15)
        first = int(browser.js("document.getElementById('frames-total').textContent"))
        # A live update: the counter moves on without reloading the page.
        assert browser.wait_for(f"+document.getElementById('frames-total').textContent > {first} + 5", 15)
        assert browser.wait_for("[...document.querySelectorAll('#frames img')]"
                                ".some(i => i.complete && i.naturalWidth === 64)", 10)
        dom = browser.js("""(() => ({
            verdict: document.getElementById('verdict').textContent,
            figures: [...document.querySelectorAll('#frames figure')].map(f => [+f.dataset.frame, f.className]),
            threshold: document.getElementById('threshold').textContent,
            p50: document.getElementById('p50').textContent,
            health: document.getElementById('health').textContent,
            title: document.getElementById('title').textContent,
            defects: +document.getElementById('defects').textContent,
            polyline: document.querySelectorAll('#spark polyline').length}))()""")
        if os.environ.get("CAREG_SCREENSHOT_DIR"):
            browser.screenshot(os.path.join(os.environ["CAREG_SCREENSHOT_DIR"], "live-view.png"))
        browser.screenshot(tmp_path / "live-view.png")
        assert (tmp_path / "live-view.png").stat().st_size > 5000
    finally:
        if browser:
            browser.close()
        run.join(60)
        opts.publish.close(done.get("s"))
        out.close()
    assert dom["verdict"] in ("OK", "DEFECT") and dom["health"] == "running"
    assert dom["title"] == "careg-edge · L7 · gear" and dom["polyline"] == 1
    assert dom["threshold"] == f"{prof.threshold:.3f}" and float(dom["p50"]) > 0
    frames = [f for f, _ in dom["figures"]]
    assert 1 <= len(frames) <= KEEP_FRAMES and frames == sorted(frames, reverse=True)
    # Every 4th frame of the video holds a blob: the page marks exactly those as defects.
    assert all((cls == "defect") == (f % 4 == 3) for f, cls in dom["figures"]), dom["figures"]
    assert dom["defects"] >= 1


def live_publishers(port):
    from careg_edge.publish import open_publishers
    return open_publishers(web=f"127.0.0.1:{port}", line="L7", product="gear")
