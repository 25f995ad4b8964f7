"""`careg-edge serve`: request checks, the profile registry, batch scoring across
products, the exported Triton repository (its Python-backend models run here with a
stand-in for triton_python_backend_utils) and, in the serve venv (make serve-venv),
the PyTriton server under a bounded load, `run --server` and the one-line error
when PyTriton is missing.

References are independent of the code under test: in-process `Inspector.inspect`
for scores and verdicts, ONNX Runtime on the exported model.onnx for the encoder.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from careg_edge.demo import DATA
from line_peers import mosquitto  # noqa: F401  (fixture: a broker on loopback)
from careg_edge.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
SERVE_PY = ROOT / "build" / "serve-venv" / "bin" / "python"
PRODUCTS = ("flange", "flange.padim", "flange-k2")   # bench/load_serve.py makes them


def serve_venv_problem():
    """None when the serve venv can run PyTriton, else why not (the skip reason)."""
    if not SERVE_PY.exists():
        return f"{SERVE_PY} missing: make serve-venv (needs the package registry once)"
    r = subprocess.run([str(SERVE_PY), "-c", "import pytriton.triton, tritonclient.http"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"serve venv cannot import PyTriton: {r.stderr.strip()[-200:]}"


needs_serve_venv = pytest.mark.skipif(serve_venv_problem() is not None,
                                      reason=str(serve_venv_problem()))


@pytest.fixture(scope="module")
def insp():
    from careg_edge import Inspector
    return Inspector()


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory, insp):
    """Three products enrolled from the demo flange (no augmentation: seconds), their
    thresholds set so that the demo test images split into ok and defect."""
    sys.path.insert(0, str(ROOT / "bench"))
    from load_serve import make_profiles
    d = tmp_path_factory.mktemp("profiles")
    make_profiles(d, insp)
    return d


def demo_test_images():
    return sorted((DATA / "test").glob("*/*.png"))


# ------------------------------------------------------------------ request checks
def test_product_names_are_plain():
    from careg_edge.serve.protocol import RequestError, product_name
    assert product_name(b"flange-k2.v1_a") == "flange-k2.v1_a"
    assert product_name(np.bytes_(b"x" * 64)) == "x" * 64
    for bad in (b"", b"x" * 65, b"../etc", b"a b", "é".encode(), b"\xff\xfe", b"a/b"):
        with pytest.raises(RequestError, match="not a plain name"):
            product_name(bad)


def test_image_bytes_are_checked_before_decoding():
    from PIL import Image

    from careg_edge.serve.protocol import RequestError, decode_image
    rgb = (np.arange(12 * 10 * 3) % 251).astype(np.uint8).reshape(12, 10, 3)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    png = buf.getvalue()
    np.testing.assert_array_equal(decode_image(png), rgb)
    with pytest.raises(RequestError, match=f"{len(png)} bytes, more than the limit of {len(png) - 1}"):
        decode_image(png, max_bytes=len(png) - 1)
    with pytest.raises(RequestError, match=r"10x12 pixels, more than the limit of 119"):
        decode_image(png, max_pixels=119)
    for bad, why in ((b"", "empty"), (b"GIF89a but not really", "not a readable image"),
                     (png[: len(png) // 2], "not a readable image")):
        with pytest.raises(RequestError, match=why):
            decode_image(bad)


# ------------------------------------------------------------------ registry
def test_registry_routes_reloads_and_keeps_a_good_profile(tmp_path, profiles_dir, insp):
    from careg_edge import Profile
    from careg_edge.serve.protocol import RequestError
    from careg_edge.serve.registry import ProfileRegistry
    d = tmp_path / "p"
    d.mkdir()
    for f in profiles_dir.glob("*.careg"):
        (d / f.name).write_bytes(f.read_bytes())
    logs = []
    reg = ProfileRegistry([d], check=insp.check, log=logs.append, poll_s=0.05)
    assert reg.names() == ["flange", "flange-k2", "flange.padim"]
    before = reg.get("flange")
    with pytest.raises(RequestError, match=r"no such profile \(serving: flange, flange-k2, flange.padim\)"):
        reg.get("gasket")
    assert reg.refresh() == []
    # a new threshold written the SDK's way (atomic rename) is picked up, old object untouched
    p = Profile.load(d / "flange.careg")
    p.set_threshold(float(p.threshold) * 0.5, {"source": "test"})
    p.save(d / "flange.careg")
    assert reg.refresh() == ["flange"]
    assert reg.get("flange").threshold == pytest.approx(float(before.threshold) * 0.5)
    assert reg.get("flange") is not before and before.threshold == p.threshold * 2
    # a broken file keeps the previous profile, and is reported once
    kept = reg.get("flange-k2")
    (d / "flange-k2.careg").write_bytes(b"not a profile")
    assert reg.refresh() == [] and reg.refresh() == []
    assert reg.get("flange-k2") is kept
    assert sum("flange-k2.careg: not reloaded" in m for m in logs) == 1
    # a new product appears while serving
    (d / "gasket.careg").write_bytes((profiles_dir / "flange.careg").read_bytes())
    reg.start()
    try:
        t_end = time.monotonic() + 10
        while "gasket" not in reg.names() and time.monotonic() < t_end:
            time.sleep(0.05)
    finally:
        reg.stop()
    assert "gasket" in reg.names()


def test_registry_refuses_names_requests_cannot_carry(tmp_path, profiles_dir):
    from careg_edge.serve.registry import ProfileRegistry
    bad = tmp_path / "line 3.careg"
    bad.write_bytes((profiles_dir / "flange.careg").read_bytes())
    with pytest.raises(UserInputError, match="is the product name requests use"):
        ProfileRegistry([bad])
    with pytest.raises(UserInputError, match="no such file or folder"):
        ProfileRegistry([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no .careg profiles found"):
        ProfileRegistry([tmp_path / "empty"])


# ------------------------------------------------------------------ batch scoring
def test_one_encoder_batch_across_products_equals_inspector(profiles_dir, insp):
    from careg_edge import Profile
    from careg_edge.imageio import read_image
    from careg_edge.serve.engine import inspect_items
    profs = {n: Profile.load(profiles_dir / f"{n}.careg") for n in PRODUCTS}
    files = demo_test_images()[:7]
    names = [PRODUCTS[i % 3] for i in range(len(files))]
    rgbs = [read_image(f) for f in files]
    rgbs[2] = rgbs[2][:150, :200]   # another size: the map comes back at that size
    got = inspect_items(insp, [(profs[n], rgb) for n, rgb in zip(names, rgbs)])
    for n, rgb, r in zip(names, rgbs, got):
        want = insp.inspect(rgb, profs[n])
        assert r.score == pytest.approx(want.score, rel=1e-4)
        assert r.is_defect == want.is_defect and r.threshold == want.threshold
        assert r.anomaly_map.shape == rgb.shape[:2]
        np.testing.assert_allclose(r.anomaly_map, want.anomaly_map, rtol=1e-3, atol=1e-3 * want.score)
    assert any(r.is_defect for r in got) and not all(r.is_defect for r in got)


# ------------------------------------------------------------------ exported repository
def parse_pbtxt(text: str):
    """Protobuf text format -> {field: [values]}, messages as dicts (enough to read
    Triton's config.pbtxt; comments skipped). The strict check with Triton's own
    ModelConfig message runs in the serve venv (test below)."""
    toks = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.sub(r"#[^\n]*", "", text))
    pos = 0

    def value():
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t == "{":
            return message("}")
        if t.startswith('"'):
            return t[1:-1]
        return int(t) if re.fullmatch(r"-?\d+", t) else t

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(toks) and toks[pos] != end:
            name = toks[pos]
            pos += 1
            if toks[pos] == ":":
                pos += 1
            if toks[pos] == "[":
                pos += 1
                while toks[pos] != "]":
                    out.setdefault(name, []).append(value())
                    if toks[pos] == ",":
                        pos += 1
                pos += 1
            else:
                out.setdefault(name, []).append(value())
        pos += 1
        return out

    return message(None)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, profiles_dir):
    from careg_edge.serve.repo_export import export_repo
    out = tmp_path_factory.mktemp("repo") / "models"
    export_repo(out, profiles=[profiles_dir], max_batch=4)
    return out


def test_exported_repository_configs(repo):
    from careg_edge.runtime.onnxruntime_backend import OnnxRuntime
    cfg = {d.name: parse_pbtxt((d / "config.pbtxt").read_text()) for d in repo.iterdir()}
    assert sorted(cfg) == ["careg", "careg_decode", "careg_encoder", "careg_score"]
    rt = OnnxRuntime(repo / "careg_encoder" / "1" / "model.onnx")
    outs = rt.infer(np.zeros((2, 3) + tuple(rt.meta.input_size), np.float32))
    enc = cfg["careg_encoder"]
    assert enc["platform"] == ["onnxruntime_onnx"] and enc["max_batch_size"] == [4]
    assert enc["dynamic_batching"] and enc["instance_group"][0]["kind"] == ["KIND_AUTO"]
    assert [i["dims"] for i in enc["input"]] == [[3, *rt.meta.input_size]]
    assert {o["name"][0]: o["dims"] for o in enc["output"]} == \
        {n: list(v.shape[1:]) for n, v in outs.items()}
    assert "tensorrt" in (repo / "careg_encoder" / "config.pbtxt").read_text()
    for m in ("careg_decode", "careg_score"):
        assert cfg[m]["backend"] == ["python"] and cfg[m]["dynamic_batching"]
        assert cfg[m]["instance_group"][0]["kind"] == ["KIND_CPU"]
        assert "TritonPythonModel" in (repo / m / "1" / "model.py").read_text()
    params = {p["key"][0]: p["value"][0]["string_value"][0] for p in cfg["careg_score"]["parameters"]}
    assert params["profiles_dir"] == "profiles"
    assert sorted(f.name for f in (repo / "careg_score" / "profiles").iterdir()) == \
        ["flange-k2.careg", "flange.careg", "flange.padim.careg"]
    # the ensemble: every step input exists before it is used, every output is produced
    ens = cfg["careg"]
    assert ens["platform"] == ["ensemble"]
    have = {i["name"][0] for i in ens["input"]}
    assert have == {"image", "product"}
    for step in ens["ensemble_scheduling"][0]["step"]:
        model = cfg[step["model_name"][0]]
        ins = {m["key"][0]: m["value"][0] for m in step["input_map"]}
        assert set(ins) == {i["name"][0] for i in model["input"]}
        assert set(ins.values()) <= have, (step["model_name"], set(ins.values()) - have)
        outs_map = {m["key"][0]: m["value"][0] for m in step["output_map"]}
        assert set(outs_map) <= {o["name"][0] for o in model["output"]}
        have |= set(outs_map.values())
    assert {o["name"][0] for o in ens["output"]} <= have


@needs_serve_venv
def test_exported_configs_parse_as_triton_model_configs(repo):
    code = ("import sys, glob; from google.protobuf import text_format; "
            "from tritonclient.grpc import model_config_pb2 as m\n"
            "for f in sorted(glob.glob(sys.argv[1] + '/*/config.pbtxt')):\n"
            "    c = text_format.Parse(open(f).read(), m.ModelConfig()); print(c.name, c.max_batch_size)")
    r = subprocess.run([str(SERVE_PY), "-c", code, str(repo)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["careg", "4", "careg_decode", "4", "careg_encoder", "4", "careg_score", "4"]


class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Response:
    def __init__(self, output_tensors=(), error=None):
        self.tensors = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class _TritonError:
    def __init__(self, message):
        self._message = message

    def message(self):
        return self._message


def _request(**arrays):
    return types.SimpleNamespace(inputs={k: _Tensor(k, v) for k, v in arrays.items()})


@pytest.fixture
def backend(repo, monkeypatch):
    """The repository's model.py files imported against a stand-in for the module
    Triton's Python backend provides: the interface they use, nothing more."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor, fake.InferenceResponse, fake.TritonError = _Tensor, _Response, _TritonError
    fake.get_input_tensor_by_name = lambda req, name: req.inputs.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.delitem(sys.modules, "careg_edge.serve.backend_model", raising=False)
    models = {}
    for name in ("careg_decode", "careg_score"):
        spec = importlib.util.spec_from_file_location(f"{name}_model", repo / name / "1" / "model.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        m = mod.TritonPythonModel()
        config = parse_pbtxt((repo / name / "config.pbtxt").read_text())
        as_json = {"name": name, "parameters": {p["key"][0]: {"string_value": p["value"][0]["string_value"][0]}
                                                for p in config.get("parameters", [])}}
        m.initialize({"model_config": json.dumps(as_json), "model_repository": str(repo / name),
                      "model_version": "1"})
        models[name] = m
    yield models
    models["careg_score"].finalize()


def test_python_backend_models_equal_inspector(backend, repo, profiles_dir, insp):
    from careg_edge import Profile
    from careg_edge.runtime.onnxruntime_backend import OnnxRuntime
    files = demo_test_images()[::3][:6]
    blobs = [f.read_bytes() for f in files]
    names = [PRODUCTS[i % 3] for i in range(len(files))]
    # decode: two requests (Triton may batch requests of several items), one bad
    dec = backend["careg_decode"].execute([
        _request(image=np.array([[b] for b in blobs[:2]], dtype=object)),
        _request(image=np.array([[b"not an image"]], dtype=object)),
        _request(image=np.array([[b] for b in blobs[2:]], dtype=object))])
    assert dec[1].error is not None and "not a readable image" in dec[1].error.message()
    assert dec[0].error is None and dec[2].error is None
    x = np.concatenate([dec[0].tensors["input"], dec[2].tensors["input"]])
    sizes = np.concatenate([dec[0].tensors["size"], dec[2].tensors["size"]])
    assert x.dtype == np.float32 and x.shape == (len(files), 3, 224, 224)
    from PIL import Image
    np.testing.assert_array_equal(sizes, [Image.open(f).size[::-1] for f in files])
    # the encoder step, as Triton's ONNX Runtime backend runs the exported file
    out = OnnxRuntime(repo / "careg_encoder" / "1" / "model.onnx").infer(x)
    reqs = []
    for i in range(len(files)):
        reqs.append(_request(size=sizes[i:i + 1], product=np.array([[names[i].encode()]], dtype=object),
                             **{k: v[i:i + 1] for k, v in out.items()}))
    reqs.insert(2, _request(size=sizes[:1], product=np.array([[b"gasket"]], dtype=object),
                            **{k: v[:1] for k, v in out.items()}))
    res = backend["careg_score"].execute(reqs)
    assert res[2].error is not None and "'gasket': no such profile" in res[2].error.message()
    res = res[:2] + res[3:]
    verdicts = []
    for f, n, r in zip(files, names, res):
        assert r.error is None
        want = insp.inspect(str(f), Profile.load(profiles_dir / f"{n}.careg"))
        t = r.tensors
        assert t["verdict"][0][0] == (b"defect" if want.is_defect else b"ok")
        assert float(t["score"][0][0]) == pytest.approx(want.score, rel=1e-4)
        assert float(t["threshold"][0][0]) == pytest.approx(want.threshold, rel=1e-6)
        assert t["reason"][0][0].decode() == want.reason and t["error"][0][0] == b""
        assert t["heatmap"].shape == (1, 32, 32)
        assert t["heatmap"].mean() == pytest.approx(want.anomaly_map.mean(), rel=0.05)
        verdicts.append(want.is_defect)
    assert any(verdicts) and not all(verdicts), "pick images with both verdicts"


def test_export_refuses_a_folder_it_did_not_write(tmp_path):
    from careg_edge.serve.repo_export import export_repo
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not a repository this command wrote"):
        export_repo(tmp_path)


# ------------------------------------------------------------------ PyTriton server
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="PyTriton is importable here")
def test_serve_without_pytriton_says_how_to_get_it(profiles_dir):
    r = subprocess.run([sys.executable, "-m", "careg_edge.cli", "serve", "--profiles", str(profiles_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "make serve-venv" in lines[0] and "Traceback" not in r.stderr


@needs_serve_venv
def test_load_on_loopback(tmp_path, profiles_dir, insp):
    """bench/load_serve.py, small and bounded: every request answered and equal to
    in-process inspection (checked again here, in this interpreter), bad requests
    refused with a message and the server still serving, a profile reload seen."""
    from careg_edge import Profile
    out = tmp_path / "load.json"
    cmd = [str(SERVE_PY), str(ROOT / "bench" / "load_serve.py"), "--clients", "3", "--frames", "12",
           "--deadline-s", "240", "--profiles", str(profiles_dir), "--json", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    s, c = res["served"], res["check"]
    assert s["sent"] == 36 and s["answered"] == 36 and s["failed"] == 0, s["failures"]
    assert c["mismatches"] == 0, c["mismatch_examples"]
    expect = {"wrong shape": "unexpected shape", "wrong dtype": "data-type is 'FP32'",
              "unknown product": "no such profile", "bad product name": "not a plain name",
              "non-image bytes": "not a readable image", "too big": "more than the limit"}
    for name, b in res["bad_requests"].items():
        assert b["good_after"] is True, (name, b)
        assert b["refused"] is True, (name, b)
        if name in expect:
            assert expect[name] in b["message"], (name, b["message"])
    assert set(expect) | {"disconnect mid-request", "hang up before the answer"} == set(res["bad_requests"])
    assert res["reload"]["seen_after_load_s"] is not None      # the new threshold did arrive
    assert c["reload_late_with_old_threshold"] == 0
    assert c["reload_unknown_threshold"] == 0
    assert res["metrics"]["nv_inference_request_success"] >= 36
    assert res["server_exit"] == 0
    # independent of the bench's own reference: this interpreter's Inspector (numpy 2)
    profs = {n: Profile.load(profiles_dir / f"{n}.careg") for n in res["products"]}
    scores = {}
    for resp in res["responses"]:
        key = (resp["product"], resp["file"])
        if key not in scores:
            scores[key] = insp.inspect(str(ROOT / res["files"][resp["file"]]), profs[resp["product"]]).score
        assert resp["score"] == pytest.approx(scores[key], rel=1e-4)
        assert resp["verdict"] == ("defect" if scores[key] > resp["threshold"] else "ok")


@needs_serve_venv
def test_run_server_prints_the_local_verdicts(tmp_path, profiles_dir, insp):
    """`careg-edge run --server` against a real `careg-edge serve`: the JSON lines equal
    a local `run`'s scores and decisions."""
    from careg_edge import Profile
    sys.path.insert(0, str(ROOT / "bench"))
    from load_serve import free_port, stop_server
    port = free_port()
    srv = subprocess.Popen([str(SERVE_PY), "-m", "careg_edge.cli", "serve", "--profiles", str(profiles_dir),
                            "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "server.log", "w"), start_new_session=True)
    try:
        folder = DATA / "test" / "scratch"
        r = subprocess.run([str(SERVE_PY), "-m", "careg_edge.cli", "run", "--server",
                            f"http://127.0.0.1:{port}", "--product", "flange.padim", "--images",
                            str(folder), "--batch", "2", "--reconnect", "120"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        prof = Profile.load(profiles_dir / "flange.padim.careg")
        files = sorted(folder.glob("*.png"))
        assert [x["name"] for x in lines] == [f.name for f in files]
        for x, f in zip(lines, files):
            want = insp.inspect(str(f), prof)
            assert x["score"] == pytest.approx(want.score, rel=1e-4)
            assert x["decision"] == ("defect" if want.is_defect else "ok")
            assert x["profiles"][0]["profile"] == "flange.padim"
        bad = subprocess.run([str(SERVE_PY), "-m", "careg_edge.cli", "run", "--server",
                              f"http://127.0.0.1:{port}", "--product", "gasket", "--images", str(folder)],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert bad.returncode != 0 and "'gasket': no such profile" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        assert stop_server(srv)[0] == 0


SEND = """
import sys
from careg_edge.serve.client import ServeClient, ServeRefused
c = ServeClient(sys.argv[1])
c.wait_ready(120)
for product, path in zip(sys.argv[2::2], sys.argv[3::2]):
    try:
        r = c.inspect(product, open(path, "rb").read())
        print(product, r.verdict, r.score)
    except ServeRefused as e:
        print(product, "refused", e)
"""


@needs_serve_venv
def test_serve_publishes_each_verdict_to_mqtt_and_the_web_view(tmp_path, profiles_dir, mosquitto):
    """The served verdicts reach the line: MQTT on one topic per product, the web view
    (product "all") counting answered and refused items."""
    import urllib.request

    from line_peers import Subscriber, free_port, wait_until
    sys.path.insert(0, str(ROOT / "bench"))
    from load_serve import free_port as free_ports
    from load_serve import stop_server
    port, web = free_ports(), free_port()
    sub = Subscriber(mosquitto.port, client_id="careg-serve-test")
    srv = subprocess.Popen([str(SERVE_PY), "-m", "careg_edge.cli", "serve", "--profiles", str(profiles_dir),
                            "--port", str(port), "--line", "L3", "--mqtt", f"127.0.0.1:{mosquitto.port}",
                            "--web", f"127.0.0.1:{web}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "server.log", "w"), start_new_session=True)
    try:
        files = demo_test_images()[:3]
        args = ["flange", str(files[0]), "flange-k2", str(files[1]), "flange", str(files[2]),
                "gasket", str(files[0])]
        r = subprocess.run([str(SERVE_PY), "-c", SEND, f"http://127.0.0.1:{port}", *args],
                           capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        answers = [line.split(" ", 2) for line in r.stdout.splitlines()]
        assert all(a[1] in ("ok", "defect") for a in answers[:3]), answers
        assert answers[3][1] == "refused" and "no such profile" in answers[3][2]
        assert wait_until(lambda: len(sub.verdicts()) >= 3, timeout=20), sub.messages
        by_topic = {}
        for t, p, _ in sub.messages:
            if t.endswith("/verdict"):
                by_topic.setdefault(t, []).append(json.loads(p))
        assert sorted(by_topic) == ["careg/L3/flange-k2/verdict", "careg/L3/flange/verdict"]
        assert [v["score"] for v in by_topic["careg/L3/flange/verdict"]] == \
            pytest.approx([float(answers[0][2]), float(answers[2][2])], rel=1e-5)
        assert by_topic["careg/L3/flange-k2/verdict"][0]["source"] == "serve:flange-k2"
        state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{web}/state", timeout=10).read())
        assert state["product"] == "all" and state["line"] == "L3"
        assert state["frames"] == 3 and state["unreadable"] == 1
        assert {f["source"] for f in state["frames_shown"] if "score" in f} == {"serve:flange", "serve:flange-k2"}
    finally:
        sub.close()
        assert stop_server(srv)[0] == 0


ORT_AS_PYTHON = '''
from pathlib import Path
import triton_python_backend_utils as pb_utils
from careg_edge.runtime.onnxruntime_backend import OnnxRuntime


class TritonPythonModel:
    """Test only: the exported model.onnx run by ONNX Runtime inside the Python
    backend, because PyTriton's tritonserver ships no onnxruntime backend."""

    def initialize(self, args):
        self.rt = OnnxRuntime(Path(args["model_repository"]) / "1" / "model.onnx")

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in self.rt.infer(
            pb_utils.get_input_tensor_by_name(r, "image").as_numpy()).items()]) for r in requests]
'''


@needs_serve_venv
def test_exported_repository_runs_in_a_real_tritonserver(tmp_path, repo, profiles_dir, insp):
    """The exported repository loaded by a real `tritonserver` (the one PyTriton ships,
    Python backend only): ensemble, careg_decode and careg_score exactly as exported,
    careg_encoder switched to the Python backend running the same model.onnx. The
    stock container's ONNX Runtime backend is the one part this does not cover."""
    import shutil
    import urllib.request

    from careg_edge import Profile
    sys.path.insert(0, str(ROOT / "bench"))
    from load_serve import free_port
    info = subprocess.run([str(SERVE_PY), "-c", "import sysconfig, sys, os, pytriton; "
                           "print(sysconfig.get_config_var('LIBDIR')); print(os.path.dirname(pytriton.__file__)); "
                           "print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                          capture_output=True, text=True, check=True).stdout.split()
    libdir, pkg, pyver = info
    server = tmp_path / "tritonserver"
    shutil.copytree(Path(pkg) / "tritonserver", server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    shutil.copy(Path(pkg) / "tritonserver" / "python_backend_stubs" / pyver / "triton_python_backend_stub",
                server / "backends" / "python")
    models = tmp_path / "models"
    shutil.copytree(repo, models)
    enc = models / "careg_encoder"
    (enc / "1" / "model.py").write_text(ORT_AS_PYTHON)
    cfg = (enc / "config.pbtxt").read_text()
    (enc / "config.pbtxt").write_text(cfg.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
                                      .replace("KIND_AUTO", "KIND_CPU"))
    port = free_port()
    env = dict(os.environ, PATH=f"{SERVE_PY.parent}:{os.environ['PATH']}",
               LD_LIBRARY_PATH=f"{libdir}:{Path(pkg).parent / 'nvidia_pytriton.libs'}")
    log = open(tmp_path / "tritonserver.log", "w")
    proc = subprocess.Popen([str(server / "bin" / "tritonserver"), "--model-repository", str(models),
                             "--backend-directory", str(server / "backends"), "--http-address", "127.0.0.1",
                             "--http-port", str(port), "--grpc-address", "127.0.0.1",
                             "--grpc-port", str(port + 1), "--metrics-port", str(port + 2)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        files = demo_test_images()[::2][:6]
        args = []
        for i, f in enumerate(files):
            args += [PRODUCTS[i % 3], str(f)]
        args += ["gasket", str(files[0]), "flange", str(ROOT / "README.md")]
        r = subprocess.run([str(SERVE_PY), "-c", SEND, f"http://127.0.0.1:{port}", *args],
                           capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:] + (tmp_path / "tritonserver.log").read_text()[-3000:]
        answers = [line.split(" ", 2) for line in r.stdout.splitlines()]
        assert len(answers) == len(files) + 2
        verdicts = []
        for (product, verdict, score), f in zip(answers, files):
            want = insp.inspect(str(f), Profile.load(profiles_dir / f"{product}.careg"))
            assert float(score) == pytest.approx(want.score, rel=1e-4)
            assert verdict == ("defect" if want.is_defect else "ok")
            verdicts.append(want.is_defect)
        assert any(verdicts) and not all(verdicts)
        assert answers[-2][1] == "refused" and "'gasket': no such profile" in answers[-2][2]
        assert answers[-1][1] == "refused" and "not a readable image" in answers[-1][2]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port + 2}/metrics", timeout=10).read().decode()
        assert re.search(r'nv_inference_request_success\{model="careg",version="1"\} %d' % len(files), metrics)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
