"""ONNX export: ORT vs torch parity of every output for every backbone (batch 1 and 4,
random and real images), graph contents, metadata round trip, encoder checks, CLI."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from careg_edge.encoder.backbones import BACKBONES  # noqa: E402
from careg_edge.encoder.careg import CARegEncoder  # noqa: E402
from careg_edge.errors import CaregError, EncoderMismatch, UserInputError, WrongKind  # noqa: E402
from careg_edge.export.onnx import FORBIDDEN_OPS, OPSET, export_onnx  # noqa: E402
from careg_edge.runtime.base import OUTPUT_NAMES  # noqa: E402
from careg_edge.runtime.onnxruntime_backend import META_KEY, OnnxRuntime, read_meta  # noqa: E402

SIZE = 64   # small and fast; the graph is the same at 224
# max abs error <= 1e-4, or 1e-5 of the output's own max |value| where that exceeds 10.
# Every output of resnet18 / wide_resnet50_2 / resnet50v2 / mobilenet_v2 and all θ meet
# 1e-4 absolute; EfficientNet-Lite0's ImageNet features reach ~30-50, where float32
# summation-order noise between two correct convolution libraries is 6e-5..2e-4
# (measured: worst 7.4e-6 relative on MPDD images).
TOL, REL_TOL = 1e-4, 1e-5


def make_encoder(backbone, size=SIZE, seed=0):
    """Real ImageNet weights where this machine has them, random otherwise; the STN
    heads get random (non-identity) transforms so GridSample is really exercised."""
    torch.manual_seed(seed)
    try:
        enc = CARegEncoder(backbone, "rotation_scale", weights="default", input_size=(size, size))
    except CaregError:
        enc = CARegEncoder(backbone, "rotation_scale", weights=None, input_size=(size, size))
    with torch.no_grad():
        for stn in enc.stn:
            stn.fc[2].weight.normal_(0.0, 1e-3)   # input-dependent but well conditioned
            stn.fc[2].bias.add_(torch.tensor([0.3, -0.1, 0.15]))   # rotate + anisotropic scale
    return enc.eval()


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def exported(request, tmp_path_factory):
    enc = make_encoder(request.param)
    path = export_onnx(enc, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx", verbose=False)
    return enc, path, OnnxRuntime(path, threads=2)


def _parity(enc, rt, x):
    with torch.no_grad():
        ref = [t.numpy() for t in enc(torch.from_numpy(x))]
    got = rt.infer(x)
    assert list(got) == list(OUTPUT_NAMES)
    for name, r in zip(OUTPUT_NAMES, ref):
        assert got[name].shape == r.shape, name
        err, tol = float(np.abs(got[name] - r).max()), max(TOL, REL_TOL * float(np.abs(r).max()))
        assert err <= tol, f"{name}: max abs error {err:.2e} > {tol:.1e}"
    return ref


@pytest.mark.parametrize("batch", [1, 4])
def test_ort_matches_torch_random_images(exported, batch):
    enc, _, rt = exported
    x = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    ref = _parity(enc, rt, x)
    theta = ref[3]
    assert np.abs(theta[:, :, :, :2] - np.eye(2)).max() > 0.05   # the warp is not the identity


def test_ort_matches_torch_real_images(exported, metal_plate):
    from careg_edge.calibration.int8 import calibration_images
    enc, _, rt = exported
    x = calibration_images(metal_plate / "train" / "good", rt.meta, num_images=4)
    _parity(enc, rt, x)
    _parity(enc, rt, x[:1])


def test_graph_is_tensorrt_friendly(exported):
    _, path, _ = exported
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample" in ops and not ops & set(FORBIDDEN_OPS)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    onnx.checker.check_model(model, full_check=True)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)


def test_metadata_round_trip(exported):
    enc, path, rt = exported
    want = enc.meta()
    for got in (read_meta(path), rt.meta):
        assert got.encoder_hash == want.encoder_hash == enc.encoder_hash()
        assert (got.backbone, got.input_size, got.stn_mode) == (want.backbone, (SIZE, SIZE),
                                                               "rotation_scale")
        assert got.mean == want.mean and got.std == want.std and got.scale == want.scale
        assert got.channels == want.channels
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["careg_edge.encoder_hash"] == want.encoder_hash
    assert props["careg_edge.input_size"] == f"{SIZE}x{SIZE}" and props["careg_edge.version"]


def test_stripped_metadata_refused(tmp_path):
    path = export_onnx(make_encoder("mobilenet_v2"), tmp_path / "m.onnx", verbose=False)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(WrongKind, match=META_KEY):
        OnnxRuntime(tmp_path / "bare.onnx")


def test_profile_from_one_encoder_refused_with_another(tmp_path):
    from careg_edge.profile import Profile
    a = export_onnx(make_encoder("mobilenet_v2", seed=1), tmp_path / "a.onnx", verbose=False)
    b = export_onnx(make_encoder("mobilenet_v2", seed=2), tmp_path / "b.onnx", verbose=False)
    ma, mb = read_meta(a), read_meta(b)
    assert ma.encoder_hash != mb.encoder_hash
    prof = Profile("padim", {"mean": np.zeros((16, 8), np.float32),
                             "precision_factor": np.zeros((16, 36), np.float32)},
                   threshold=1.0, grid=(4, 4), image_size=(SIZE, SIZE), sigma=4.0,
                   encoder_hash=ma.encoder_hash)
    prof.check_encoder(ma.encoder_hash, ma.backbone)
    with pytest.raises(EncoderMismatch, match="re-enroll"):
        prof.check_encoder(mb.encoder_hash, mb.backbone)


def test_checkpoint_export_and_size_check(tmp_path):
    from careg_edge.encoder.checkpoint import save
    enc = make_encoder("mobilenet_v2")
    save(tmp_path / "m.ckpt", enc, {"note": "test"})
    path = export_onnx(str(tmp_path / "m.ckpt"), tmp_path / "m.onnx", verbose=False)
    assert read_meta(path).encoder_hash == enc.encoder_hash()
    with pytest.raises(UserInputError, match="trained at 64x64"):
        export_onnx(str(tmp_path / "m.ckpt"), tmp_path / "x.onnx", imgsz=96, verbose=False)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "careg_edge.cli", *args],
                          capture_output=True, text=True)


def test_cli_export_prints_one_line_and_next_command(tmp_path):
    out = _cli("export", "imagenet:mobilenet_v2", "--imgsz", "64", "-o", str(tmp_path / "m.onnx"))
    assert out.returncode == 0, out.stderr
    line, = out.stdout.strip().splitlines()
    assert "m.onnx" in line and "MB" in line and " s;" in line and "next: careg-edge" in line
    assert read_meta(tmp_path / "m.onnx").input_size == (64, 64)


@pytest.mark.parametrize("args,msg", [
    (["--format", "onnx", "--calib", "x"], "does not apply"),
    (["--imgsz", "50"], "multiple of 16"),
    (["--opset", "15"], "GridSample needs opset"),
])
def test_cli_export_bad_options_one_line(tmp_path, args, msg):
    out = _cli("export", "imagenet:mobilenet_v2", "-o", str(tmp_path / "m.onnx"), *args)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and msg in out.stderr


def test_cli_export_checkpoint_of_another_architecture(tmp_path):
    from careg_edge.container import read_container, write_container
    from careg_edge.encoder.checkpoint import KIND, VERSION, save
    save(tmp_path / "m.ckpt", make_encoder("mobilenet_v2"), {})
    tensors, meta = read_container(tmp_path / "m.ckpt", KIND, VERSION)
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "checksum",
                                                       "careg_edge_version")}
    meta["config"] = meta["config"].replace("mobilenet_v2", "resnet18")
    write_container(tmp_path / "other.ckpt", tensors, meta, KIND, VERSION)
    out = _cli("export", str(tmp_path / "other.ckpt"))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "another architecture" in out.stderr


def test_simplify_flag(tmp_path):
    import importlib.util
    enc = make_encoder("mobilenet_v2")
    if importlib.util.find_spec("onnxslim") is None:
        from careg_edge.errors import MissingDependency
        with pytest.raises(MissingDependency, match="pip install onnxslim"):
            export_onnx(enc, tmp_path / "s.onnx", simplify_graph=True, verbose=False)
        return
    path = export_onnx(enc, tmp_path / "s.onnx", simplify_graph=True, verbose=False)
    x = np.random.default_rng(0).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    _parity(enc, OnnxRuntime(path), x)
