"""Load test of `careg-edge serve` on loopback: many clients, three products, bad
requests, a disconnecting client and a profile rewritten while the load runs.

Runs in the serve venv (PyTriton, tritonclient; make serve-venv):

    build/serve-venv/bin/python bench/load_serve.py --clients 8 --frames 250
    build/serve-venv/bin/python bench/load_serve.py --clients 3 --frames 12 --json out.json

What it does, bounded in count and time (--deadline-s; it stops by itself):
  1. three tiny profiles enrolled from the bundled demo flange (or --profiles DIR);
  2. one in-process pass over the same frames (Inspector.inspect per frame, the call
     `careg-edge run` makes): the reference verdicts and scores, and its latency;
  3. `careg-edge serve` started as a subprocess on a free loopback port;
  4. --clients threads, each sending --frames frames one after another; meanwhile
     malformed requests (wrong shape, wrong dtype, unknown product, bad product name,
     non-image bytes, too big), a client that disconnects mid-request and one that
     hangs up before its answer, each followed by a good request; and, a third of the
     way in, one profile rewritten (atomically) with half its threshold;
  5. checks: every request answered, verdicts equal the reference (score within
     --rtol; verdict by the threshold the server returned), every bad request refused
     with a message, the good request after each one answered, later responses carry
     the new threshold; Triton's metrics read back (requests, batches formed).
Prints a table and, with --json, writes every figure and every response.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PRODUCTS = (("flange", "patchcore", slice(0, 4)), ("flange.padim", "padim", slice(0, 4)),
            ("flange-k2", "patchcore", slice(2, 4)))


def pct(v, q):
    return float(np.percentile(v, q)) if len(v) else float("nan")


def free_port(n: int = 3) -> int:
    """A port p with p..p+n-1 free on loopback (HTTP, gRPC, metrics)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + n < 65536 and all(_free(p + i) for i in range(n)):
            return p
    raise RuntimeError("no free port range on loopback")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def make_profiles(folder: Path, insp) -> None:
    """Three small products from the demo flange's good images (seconds, not minutes).
    Enrolled without augmentation they pass every demo test image, so each threshold is
    set between two test scores near their median: the verdicts then split, and a
    verdict that disagrees with the reference cannot hide behind "all ok"."""
    from careg_edge.demo import DATA
    good = sorted(str(p) for p in (DATA / "train" / "good").glob("*.png"))
    tests = [str(p) for p in sorted((DATA / "test").glob("*/*.png"))]
    folder.mkdir(parents=True, exist_ok=True)
    for name, est, part in PRODUCTS:
        prof = insp.enroll(good[part], estimator=est, augment="none", seed=0)
        s = np.sort([r.score for r in insp.inspect_batch(tests, prof)])
        mid = len(s) // 2
        prof.set_threshold(float(s[mid - 1] + s[mid]) / 2, {"source": "bench/load_serve.py: split verdicts"})
        prof.save(folder / f"{name}.careg")


def frame_files():
    from careg_edge.demo import DATA
    return sorted((DATA / "test").glob("*/*.png")) + sorted((DATA / "train" / "good").glob("*.png"))


def plan(clients: int, frames: int, products, files):
    """(client, i) -> (product, file index): every client mixes products and images."""
    return [[(products[(c + i) % len(products)], (c * 7 + i) % len(files)) for i in range(frames)]
            for c in range(clients)]


def in_process(insp, profiles, jobs, files):
    """The reference: each frame inspected here, one at a time, like `careg-edge run`."""
    from careg_edge.imageio import read_image
    ref, lat = {}, []
    t0 = time.perf_counter()
    for job in jobs:
        for product, k in job:
            t = time.perf_counter()
            r = insp.inspect(read_image(files[k]), profiles[product])
            lat.append((time.perf_counter() - t) * 1000)
            ref[(product, k)] = (float(r.score), bool(r.is_defect), float(r.threshold))
    wall = time.perf_counter() - t0
    return ref, {"frames": len(lat), "wall_s": wall, "fps": len(lat) / wall,
                 "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


def start_server(profiles_dir: Path, port: int, args, log_path: Path):
    cmd = [sys.executable, "-m", "careg_edge.cli", "serve", "--profiles", str(profiles_dir),
           "--port", str(port), "--max-batch", str(args.max_batch), "--poll", str(args.poll),
           "--max-image-bytes", str(args.max_image_bytes)]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
                            start_new_session=True), cmd


def stop_server(proc, timeout_s: float = 90.0):
    """Ctrl-C to the serve process alone (it stops Triton itself; a signal to the
    whole group would race Triton's own shutdown) -> (exit code, seconds to stop).
    Past the timeout the whole group is killed and the exit code is None."""
    t = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return None, time.monotonic() - t
    return proc.returncode, time.monotonic() - t


class Load:
    """The client side of the run; every outcome is recorded, nothing raised."""

    def __init__(self, url, jobs, files, deadline):
        self.url, self.jobs, self.files, self.deadline = url, jobs, files, deadline
        self.data = [f.read_bytes() for f in files]
        self.responses = []      # dicts, one per load request
        self.failures = []       # load requests that got no answer or an error
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.done = 0

    def client(self, c):
        from careg_edge.serve.client import ServeClient, ServeRefused
        cl = ServeClient(self.url, timeout_s=120)
        for i, (product, k) in enumerate(self.jobs[c]):
            if time.monotonic() > self.deadline:
                with self.lock:
                    self.failures.append({"client": c, "i": i, "error": "deadline reached"})
                continue
            t = time.perf_counter()
            t_sent = time.monotonic()
            try:
                r = cl.inspect(product, self.data[k])
                rec = {"client": c, "i": i, "product": product, "file": k, "t_sent": t_sent,
                       "ms": (time.perf_counter() - t) * 1000, "verdict": r.verdict,
                       "score": r.score, "threshold": r.threshold}
                with self.lock:
                    self.responses.append(rec)
                    self.done += 1
            except (ServeRefused, Exception) as e:  # noqa: BLE001 - counted, reported
                with self.lock:
                    self.failures.append({"client": c, "i": i, "error": f"{type(e).__name__}: {e}"})
        cl.close()

    def run(self, n_clients, during=None):
        threads = [threading.Thread(target=self.client, args=(c,), daemon=True) for c in range(n_clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        extra = during() if during else {}
        for t in threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 5)
        return time.perf_counter() - t0, extra


def bad_requests(url, good_product, good_bytes, max_image_bytes):
    """Each malformed request -> (refused with a message?, the message, good one after ok?)."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    from careg_edge.serve.client import ServeClient, ServeRefused
    cl = ServeClient(url, timeout_s=60)
    raw = http.InferenceServerClient(cl.url)

    def raw_infer(img, img_dtype, prod):
        """No client-side checks: what reaches the server is what it must refuse."""
        ins = [http.InferInput("image", list(img.shape), img_dtype),
               http.InferInput("product", list(prod.shape), "BYTES")]
        ins[0].set_data_from_numpy(img)
        ins[1].set_data_from_numpy(prod)
        res = raw.infer("careg", ins)
        if res.as_numpy("verdict")[0][0] == b"error":
            raise ServeRefused(res.as_numpy("error")[0][0].decode())

    one = np.array([[good_product.encode()]], dtype=object)
    cases = {
        "wrong shape": lambda: raw_infer(np.array([[good_bytes, good_bytes]], dtype=object), "BYTES", one),
        "wrong dtype": lambda: raw_infer(np.zeros((1, 1), np.float32), "FP32", one),
        "unknown product": lambda: cl.inspect("no-such-product", good_bytes),
        "bad product name": lambda: raw_infer(np.array([[good_bytes]], dtype=object), "BYTES",
                                              np.array([[b"../../etc/passwd"]], dtype=object)),
        "non-image bytes": lambda: cl.inspect(good_product, b"this is not an image" * 10),
        "too big": lambda: cl.inspect(good_product, good_bytes + b"\0" * (max_image_bytes + 1)),
        "disconnect mid-request": lambda: disconnect(cl.url, half=True),
        "hang up before the answer": lambda: disconnect(cl.url, half=False, body=good_bytes,
                                                        product=good_product),
    }
    out = {}
    for name, fn in cases.items():
        msg, refused = "", False
        try:
            fn()
        except (ServeRefused, InferenceServerException) as e:
            refused, msg = True, str(e)
        except Exception as e:  # noqa: BLE001
            msg = f"unexpected {type(e).__name__}: {e}"
        if name.startswith(("disconnect", "hang up")):
            refused = msg == ""  # nothing to refuse: the client went away
        try:
            after = cl.inspect(good_product, good_bytes).verdict in ("ok", "defect")
        except Exception as e:  # noqa: BLE001
            after = f"{type(e).__name__}: {e}"
        out[name] = {"refused": refused, "message": msg, "good_after": after}
    raw.close()
    cl.close()
    return out


def disconnect(hostport, half, body=b"", product=""):
    """A client that goes away: half a request body, or a whole request and no read."""
    import tritonclient.http as http
    host, port = hostport.rsplit(":", 1)
    if half:
        req = (f"POST /v2/models/careg/infer HTTP/1.1\r\nHost: {hostport}\r\n"
               f"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n").encode() + b'{"inputs": ['
    else:
        ins = [http.InferInput("image", [1, 1], "BYTES"), http.InferInput("product", [1, 1], "BYTES")]
        ins[0].set_data_from_numpy(np.array([[body]], dtype=object), binary_data=True)
        ins[1].set_data_from_numpy(np.array([[product.encode()]], dtype=object), binary_data=True)
        payload, json_len = http.InferenceServerClient.generate_request_body(ins)
        req = (f"POST /v2/models/careg/infer HTTP/1.1\r\nHost: {hostport}\r\n"
               f"Inference-Header-Content-Length: {json_len}\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(req)
        time.sleep(0.2)
        s.shutdown(socket.SHUT_RDWR)


def rewrite_profile(path: Path, factor: float):
    """Half the threshold, written as the SDK writes every profile (atomic rename)."""
    from careg_edge import Profile
    p = Profile.load(path)
    new = float(p.threshold) * factor
    p.set_threshold(new, {"source": "bench/load_serve.py hot-reload check"})
    p.save(path)
    return new


def reload_seen(url, product, image, new, deadline):
    """Seconds from now until a response for `product` carries threshold `new` (a short
    load can end before the watcher's next poll), or None by the deadline."""
    from careg_edge.serve.client import ServeClient
    cl, t0 = ServeClient(url), time.monotonic()
    try:
        while time.monotonic() < min(deadline, t0 + 30):
            if np.isclose(cl.inspect(product, image).threshold, new, rtol=1e-5):
                return time.monotonic() - t0
            time.sleep(0.05)
    finally:
        cl.close()
    return None


def metrics(url):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    got = {}
    for key in ("nv_inference_request_success", "nv_inference_request_failure",
                "nv_inference_exec_count", "nv_inference_count"):
        m = re.search(rf'^{key}{{[^}}]*model="careg"[^}}]*}} ([0-9.e+]+)$', text, re.M)
        got[key] = float(m.group(1)) if m else None
    return got


def check(load, ref, reload, rtol):
    """Every response vs the in-process reference; the hot reload's effect."""
    bad, max_rel = [], 0.0
    for r in load.responses:
        s_ref, _, t_ref = ref[(r["product"], r["file"])]
        rel = abs(r["score"] - s_ref) / max(abs(s_ref), 1e-12)
        max_rel = max(max_rel, rel)
        want = "defect" if s_ref > r["threshold"] else "ok"
        if rel > rtol or r["verdict"] != want:
            bad.append(r)
    old_new = (reload["old"], reload["new"])
    target = [r for r in load.responses if r["product"] == reload["product"]]
    unknown = [r for r in target if not any(np.isclose(r["threshold"], t, rtol=1e-5) for t in old_new)]
    late = [r for r in target if r["t_sent"] > reload["t_written"] + reload["settle_s"]]
    late_old = [r for r in late if not np.isclose(r["threshold"], reload["new"], rtol=1e-5)]
    return {"mismatches": len(bad), "mismatch_examples": bad[:3], "max_rel_score_diff": max_rel,
            "reload_target_responses": len(target), "reload_late_responses": len(late),
            "reload_late_with_old_threshold": len(late_old), "reload_unknown_threshold": len(unknown),
            "reload_new_seen": sum(np.isclose(r["threshold"], reload["new"], rtol=1e-5) for r in target)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--frames", type=int, default=250, help="frames per client")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--poll", type=float, default=0.25, help="server's profile poll (s)")
    ap.add_argument("--max-image-bytes", type=int, default=2 * 1024 * 1024)
    ap.add_argument("--profiles", type=Path, default=None, help="folder of profiles (default: make 3)")
    ap.add_argument("--deadline-s", type=float, default=900.0, help="the whole run stops by then")
    ap.add_argument("--rtol", type=float, default=1e-4, help="score agreement with the reference")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep-log", type=Path, default=None, help="copy the server's log here")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + args.deadline_s

    from careg_edge import Inspector, Profile
    from careg_edge.serve.client import ServeClient
    work = Path(tempfile.mkdtemp(prefix="careg-load-"))
    prof_dir = work / "profiles"
    insp = Inspector()
    if args.profiles is None:
        make_profiles(prof_dir, insp)
    else:
        prof_dir.mkdir()
        for f in sorted(args.profiles.glob("*.careg")):
            (prof_dir / f.name).write_bytes(f.read_bytes())
    paths = {f.name[:-len(".careg")]: f for f in sorted(prof_dir.glob("*.careg"))}
    products = sorted(paths)
    files = frame_files()
    jobs = plan(args.clients, args.frames, products, files)
    profiles = {n: Profile.load(p) for n, p in paths.items()}
    print(f"in-process reference over {sum(map(len, jobs))} frames ...", flush=True)
    ref, local = in_process(insp, profiles, jobs, files)

    port = free_port()
    proc, cmd = start_server(prof_dir, port, args, work / "server.log")
    url = f"http://127.0.0.1:{port}"
    result = {"command": " ".join(cmd[1:]), "clients": args.clients, "frames_per_client": args.frames,
              "products": products, "in_process": local}
    try:
        ServeClient(url).wait_ready(min(180.0, max(1.0, deadline - time.monotonic())))
        load = Load(url, jobs, files, deadline)
        target = products[0]
        reload = {"product": target, "old": float(profiles[target].threshold),
                  "settle_s": 2 * args.poll + 1.0}
        total = sum(map(len, jobs))

        def during():
            # a third of the way in: rewrite one profile; meanwhile, bad requests
            while load.done + len(load.failures) < total // 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            reload["new"] = rewrite_profile(paths[target], 0.5)
            reload["t_written"] = time.monotonic()
            return bad_requests(url, products[1], files[0].read_bytes(), args.max_image_bytes)

        print(f"load: {args.clients} clients x {args.frames} frames on {url} ...", flush=True)
        wall, bad = load.run(args.clients, during)
        lat = [r["ms"] for r in load.responses]
        result["served"] = {"answered": len(load.responses), "sent": total, "failed": len(load.failures),
                            "failures": load.failures[:5], "wall_s": wall,
                            "fps": len(load.responses) / wall if wall > 0 else 0.0,
                            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
        result["bad_requests"] = bad
        reload["seen_after_load_s"] = reload_seen(url, target, files[0].read_bytes(), reload["new"], deadline)
        result["reload"] = reload
        result["check"] = check(load, ref, reload, args.rtol)
        result["metrics_url"] = f"http://127.0.0.1:{port + 2}/metrics"
        result["metrics"] = metrics(result["metrics_url"])
        result["responses"] = load.responses
        result["reference"] = [[p, k, *v] for (p, k), v in sorted(ref.items())]
        result["files"] = [str(f.relative_to(REPO)) for f in files]
    finally:
        result["server_exit"], result["server_stop_s"] = stop_server(proc)
        if args.keep_log:
            args.keep_log.write_text((work / "server.log").read_text())
        shutil.rmtree(work, ignore_errors=True)
    result["elapsed_s"] = time.monotonic() - t_start
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


def report(r):
    s, loc, c, m = r.get("served", {}), r["in_process"], r.get("check", {}), r.get("metrics", {})
    print(f"\n{r['clients']} clients x {r['frames_per_client']} frames, products {', '.join(r['products'])}")
    print(f"{'':24} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8} {'frames/s':>9}")
    print(f"{'in-process (1 at a time)':24} {loc['frames']:7d} {loc['p50_ms']:8.1f} {loc['p99_ms']:8.1f} "
          f"{loc['fps']:9.2f}")
    if s:
        print(f"{'served (Triton)':24} {s['answered']:7d} {s['p50_ms']:8.1f} {s['p99_ms']:8.1f} {s['fps']:9.2f}")
        print(f"answered {s['answered']}/{s['sent']}, failed {s['failed']}; verdict/score mismatches "
              f"{c['mismatches']} (max relative score difference {c['max_rel_score_diff']:.2e})")
        execs, reqs = m.get("nv_inference_exec_count"), m.get("nv_inference_count")
        if execs and reqs:
            print(f"Triton metrics ({r['metrics_url']}): {reqs:.0f} inferences in {execs:.0f} batches "
                  f"(mean batch {reqs / execs:.2f})")
        print(f"hot reload of {r['reload']['product']}: threshold {r['reload']['old']:.4g} -> "
              f"{r['reload']['new']:.4g}; {c['reload_new_seen']} responses with the new one, "
              f"{c['reload_late_with_old_threshold']} late ones with the old"
              + ("" if r["reload"]["seen_after_load_s"] is None else
                 f"; after the load, new threshold seen in {r['reload']['seen_after_load_s']:.2f} s"))
        for name, b in r["bad_requests"].items():
            print(f"  {name:26} refused={b['refused']!s:5} good after={b['good_after']!s:5} "
                  f"{b['message'][:90]}")


if __name__ == "__main__":
    raise SystemExit(main())
