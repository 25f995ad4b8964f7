"""Checkpoint round trip and one-line refusal of truncated, foreign, tampered and
other-architecture files; the torch runtime on checkpoints and ImageNet specs."""
import json

import numpy as np
import pytest
import torch

from careg_edge.container import read_container, write_container
from careg_edge.encoder.careg import CARegEncoder
from careg_edge.encoder.checkpoint import KIND, VERSION, load, save
from careg_edge.encoder.heads import RegistrationHead
from careg_edge.errors import CaregError, ChecksumMismatch, FormatError
from careg_edge.encoder_meta import EncoderMeta
from careg_edge.runtime.base import OUTPUT_NAMES
from careg_edge.runtime.torch_backend import TorchRuntime


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    enc = CARegEncoder("efficientnet_lite0", "rotation_scale", weights=None, input_size=(64, 64),
                       trained=True)
    with torch.no_grad():  # non-identity transforms so theta round-trips meaningfully
        for s in enc.stn:
            s.fc[2].weight.normal_(0, 0.02)
    head = RegistrationHead(enc.trunk.channels)
    path = tmp_path_factory.mktemp("ck") / "enc.ckpt"
    momentum = {"enc.stn.0.fc.2.bias": torch.tensor([0.1, 0.2, 0.3])}
    meta = save(path, enc.eval(), {"lr": 0.01, "progress": {"step": 7}}, head=head,
                optim_state=momentum)
    return enc, head, path, meta


def test_round_trip(saved):
    enc, head, path, meta = saved
    ck = load(path)
    assert ck.meta == EncoderMeta.from_dict(meta.to_dict())
    assert ck.meta.encoder_hash == enc.encoder_hash() == ck.encoder.encoder_hash()
    assert ck.meta.trained and ck.meta.backbone == "efficientnet_lite0"
    assert ck.config["lr"] == 0.01 and ck.config["progress"]["step"] == 7
    assert ck.config["input_size"] == [64, 64] and ck.config["stn_mode"] == "rotation_scale"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(enc(x), ck.encoder(x)):
            assert torch.equal(a, b)
    head2 = RegistrationHead(ck.encoder.trunk.channels)
    head2.load_state_dict(ck.head_state)  # strict: every head tensor came back
    for k, v in head.state_dict().items():
        assert torch.equal(v, head2.state_dict()[k]), k
    torch.testing.assert_close(ck.optim_state["enc.stn.0.fc.2.bias"], torch.tensor([0.1, 0.2, 0.3]))
    _, md = read_container(path, KIND, VERSION)  # flat hash for non-JSON readers
    assert md["encoder_hash"] == meta.encoder_hash


def _one_line(excinfo, path):
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize("keep", [0, 5, 100, -1])
def test_truncated_refused(saved, tmp_path, keep):
    raw = saved[2].read_bytes()
    bad = tmp_path / "trunc.ckpt"
    bad.write_bytes(raw[:keep] if keep >= 0 else raw[:-9])
    with pytest.raises(FormatError) as e:
        load(bad)
    _one_line(e, bad)


def test_flipped_byte_and_foreign_files_refused(saved, tmp_path):
    raw = bytearray(saved[2].read_bytes())
    raw[-100] ^= 0xFF
    bad = tmp_path / "flip.ckpt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatch):
        load(bad)
    pth = tmp_path / "torchvision.pth"  # a weights file is not a checkpoint
    torch.save(saved[0].trunk.state_dict(), pth)
    with pytest.raises(FormatError) as e:
        load(pth)
    _one_line(e, pth)
    prof = tmp_path / "x.careg"
    write_container(prof, {"a": np.zeros(2, np.float32)}, {}, "careg-profile", 1)
    with pytest.raises(FormatError, match="careg-profile file, expected careg-checkpoint"):
        load(prof)


def test_other_architecture_refused(saved, tmp_path):
    """A valid container whose config names another backbone than its tensors."""
    tensors, md = read_container(saved[2], KIND, VERSION)
    cfg = json.loads(md["config"])
    cfg["backbone"] = "mobilenet_v2"
    md = dict(md, config=json.dumps(cfg))
    bad = tmp_path / "other.ckpt"
    write_container(bad, tensors, md, KIND, VERSION)
    with pytest.raises(FormatError, match="another architecture") as e:
        load(bad)
    _one_line(e, bad)


def test_tampered_tensor_fails_encoder_hash(saved, tmp_path):
    tensors, md = read_container(saved[2], KIND, VERSION)
    tensors["stn.2.fc.2.bias"] = tensors["stn.2.fc.2.bias"] + 1e-3  # valid container, wrong data
    bad = tmp_path / "tampered.ckpt"
    write_container(bad, tensors, md, KIND, VERSION)
    with pytest.raises(ChecksumMismatch, match="encoder hash"):
        load(bad)


def test_torch_runtime_on_checkpoint(saved):
    enc, _, path, meta = saved
    rt = TorchRuntime(str(path), threads=1)
    assert rt.meta.encoder_hash == meta.encoder_hash and rt.meta.input_size == (64, 64)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    out = rt.infer(x)
    assert tuple(out) == OUTPUT_NAMES
    with torch.no_grad():
        ref = enc(torch.from_numpy(x))
    for name, r in zip(OUTPUT_NAMES, ref):
        np.testing.assert_allclose(out[name], r.numpy(), atol=1e-6, err_msg=name)
    with pytest.raises(CaregError, match=r"float32 \[B, 3, 64, 64\]"):
        rt.infer(x[:, :, :32])
    assert rt.info()["backend"] == "torch"


def test_torch_runtime_imagenet_spec_and_errors(tmp_path):
    rt = TorchRuntime("imagenet:mobilenet_v2", input_size=64)
    assert rt.meta.stn_mode == "identity" and not rt.meta.trained
    out = rt.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert out["feat3"].shape == (1, 96, 4, 4)
    np.testing.assert_array_equal(out["theta_inv"][0], np.broadcast_to(np.eye(2, 3), (3, 2, 3)))
    with pytest.raises(CaregError, match="no such checkpoint"):
        TorchRuntime(str(tmp_path / "missing.ckpt"))
    with pytest.raises(CaregError, match="unknown"):
        TorchRuntime("imagenet:vgg16")
