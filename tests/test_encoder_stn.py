"""Spatial transformer and encoder geometry against independent references:
torch's own affine_grid (the convention DEVELOPERS.md fixes), NumPy matrix
algebra, and the identity-initialisation promise."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from careg_edge.encoder.careg import CARegEncoder, imagenet_encoder
from careg_edge.encoder.stn import (MAX_LOG2_SCALE, MAX_SHEAR, MAX_SHIFT, MODE_INIT, STN,
                                    base_grid, compose, invert, params_to_theta, warp)
from careg_edge.errors import UserInputError

TRAINABLE_MODES = [m for m in MODE_INIT if m != "identity"]


def _h(theta):
    """[..., 2, 3] -> [..., 3, 3] homogeneous NumPy matrices."""
    t = np.asarray(theta, np.float64)
    last = np.broadcast_to(np.array([0.0, 0.0, 1.0]), t.shape[:-2] + (1, 3))
    return np.concatenate([t, last], axis=-2)


def test_warp_matches_affine_grid_reference():
    """Explicit base-grid warp == F.affine_grid + grid_sample (border, align_corners=False)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 9, 13, generator=g)
    theta = torch.eye(2, 3).expand(3, 2, 3) + 0.3 * torch.randn(3, 2, 3, generator=g)
    ref = F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False),
                        mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(warp(x, theta, base_grid(9, 13)), ref, atol=1e-5, rtol=1e-5)


def test_base_grid_is_pixel_centres():
    g = base_grid(2, 4).numpy()
    np.testing.assert_allclose(g[:4, 0], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(g[::4, 1], [-0.5, 0.5])
    assert (g[:, 2] == 1).all()


@pytest.mark.parametrize("mode", TRAINABLE_MODES)
def test_stn_identity_init_gives_identity_warp(mode):
    torch.manual_seed(0)
    stn = STN(16, (12, 8), mode).eval()
    x = torch.randn(2, 16, 12, 8)
    y, theta = stn(x)
    np.testing.assert_array_equal(theta.detach().numpy(), np.tile(np.eye(2, 3), (2, 1, 1)))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)  # bilinear at pixel centres


def test_shrink_and_reset_bring_the_stn_back_to_the_identity():
    """Dead-step recovery (lab/train/loop.recover): shrink halves the raw output,
    reset rebuilds a non-finite STN whose θ is the exact identity again."""
    torch.manual_seed(0)
    stn = STN(16, (12, 8), "rotation").eval()
    x = torch.randn(3, 16, 12, 8)
    with torch.no_grad():
        stn.fc[2].weight.normal_(0, 0.01)
        stn.fc[2].bias.fill_(0.8)
    raw = stn.fc(stn.loc(x).flatten(1)).detach()
    stn.shrink_to_identity(0.5)
    angle = torch.atan2(stn.theta(x)[:, 1, 0], stn.theta(x)[:, 0, 0]).detach()
    torch.testing.assert_close(angle, 0.5 * raw[:, 0], atol=1e-6, rtol=0)
    with torch.no_grad():
        stn.loc[0].weight.fill_(float("nan"))
        stn.loc[1].running_var.fill_(float("inf"))
    stn.reset_identity()
    assert all(bool(torch.isfinite(t).all()) for t in list(stn.parameters()) + list(stn.buffers()))
    np.testing.assert_array_equal(stn.theta(x).detach().numpy(), np.tile(np.eye(2, 3), (3, 1, 1)))


@pytest.mark.parametrize("mode", TRAINABLE_MODES)
def test_params_to_theta_matches_closed_form(mode):
    u = np.array([0.3, 1.2, 0.7, -0.1, 0.9, 0.2])
    p = torch.tensor(u[None, :len(MODE_INIT[mode])], dtype=torch.float32)
    sc = lambda v: 2.0 ** (MAX_LOG2_SCALE * np.tanh(v))  # noqa: E731
    sh, tr = MAX_SHEAR * np.tanh(u), MAX_SHIFT * np.tanh(u)
    R = lambda a: np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])  # noqa: E731
    if mode == "affine":
        lin = R(u[0]) @ np.array([[1, sh[1]], [0, 1]]) @ np.diag([sc(u[2]), sc(u[3])])
        expected = np.c_[lin, [tr[4], tr[5]]]
    elif mode == "rotation_scale":
        expected = np.c_[R(u[0]) @ np.diag([sc(u[1]), sc(u[2])]), [0, 0]]
    elif mode == "rotation":
        expected = np.c_[R(u[0]), [0, 0]]
    elif mode == "translation":
        expected = [[1, 0, tr[0]], [0, 1, tr[1]]]
    elif mode == "scale":
        expected = [[sc(u[0]), 0, 0], [0, sc(u[1]), 0]]
    else:
        expected = [[1, sh[0], 0], [sh[1], 1, 0]]
    np.testing.assert_allclose(params_to_theta(p, mode)[0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("mode", TRAINABLE_MODES)
def test_transforms_bounded_and_invertible(mode):
    """Even extreme raw outputs cannot push the map off the image or collapse it."""
    p = torch.randn(2000, len(MODE_INIT[mode]), generator=torch.Generator().manual_seed(0)) * 50
    th = params_to_theta(p, mode).numpy()
    assert np.abs(th[:, :, 2]).max() <= MAX_SHIFT + 1e-6
    det = np.linalg.det(th[:, :, :2])
    assert det.min() > 0.4 and det.max() < 2.5
    np.testing.assert_array_equal(params_to_theta(torch.zeros(1, p.shape[1]), mode)[0].numpy(),
                                  np.eye(2, 3))


def test_compose_and_invert_match_numpy():
    g = torch.Generator().manual_seed(1)
    a = torch.eye(2, 3) + 0.4 * torch.randn(4, 2, 3, generator=g)
    b = torch.eye(2, 3) + 0.4 * torch.randn(4, 2, 3, generator=g)
    np.testing.assert_allclose(_h(compose(a, b))[..., :2, :], (_h(a) @ _h(b))[..., :2, :], atol=1e-5)
    np.testing.assert_allclose(_h(invert(a)), np.linalg.inv(_h(a)), atol=1e-4)
    # composing with the inverse is the identity, both ways
    eye = np.tile(np.eye(2, 3), (4, 1, 1))
    np.testing.assert_allclose(compose(a, invert(a)).numpy(), eye, atol=1e-5)
    np.testing.assert_allclose(compose(invert(a), a).numpy(), eye, atol=1e-5)


def _perturb_stns(enc, seed=0):
    """Give every STN a non-trivial transform (random last-layer weights and bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stn in enc.stn:
            fc = stn.fc[2]
            fc.weight.copy_(0.02 * torch.randn(fc.weight.shape, generator=g))
            fc.bias.add_(0.2 * torch.randn(fc.bias.shape, generator=g))


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    enc = CARegEncoder("mobilenet_v2", "affine", weights=None, input_size=(64, 64)).eval()
    _perturb_stns(enc)
    return enc


def test_encoder_outputs_contract(encoder):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f1, f2, f3, theta, theta_inv = encoder(x)
    assert [tuple(f.shape) for f in (f1, f2, f3)] == [(2, 24, 16, 16), (2, 32, 8, 8), (2, 96, 4, 4)]
    assert theta.shape == theta_inv.shape == (2, 3, 2, 3)
    assert not np.allclose(theta.numpy(), np.eye(2, 3))  # the perturbation took effect
    # theta ∘ theta_inv = identity for every stage and image
    np.testing.assert_allclose(compose(theta, theta_inv).numpy(),
                               np.broadcast_to(np.eye(2, 3), theta.shape), atol=1e-5)
    np.testing.assert_allclose(_h(theta_inv), np.linalg.inv(_h(theta)), atol=1e-4)


def test_cumulative_theta_is_composition_of_stage_transforms(encoder):
    per_stage = []
    hooks = [s.register_forward_hook(lambda m, i, o: per_stage.append(o[1].detach().numpy()))
             for s in encoder.stn]
    with torch.no_grad():
        theta = encoder(torch.randn(2, 3, 64, 64))[3].numpy()
    for h in hooks:
        h.remove()
    t1, t2, t3 = (_h(t) for t in per_stage)
    np.testing.assert_allclose(theta[:, 0], per_stage[0], atol=1e-6)
    np.testing.assert_allclose(_h(theta[:, 1]), t1 @ t2, atol=1e-5)
    np.testing.assert_allclose(_h(theta[:, 2]), t1 @ t2 @ t3, atol=1e-5)


def test_registered_features_are_trunk_features_warped(encoder):
    """feat1 = warp(stage1(x), θ1), computed here with F.affine_grid as the reference."""
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f1, _, _, theta, _ = encoder(x)
        raw = encoder.trunk.stage(0, x)
        ref = F.grid_sample(raw, F.affine_grid(theta[:, 0], raw.shape, align_corners=False),
                            padding_mode="border", align_corners=False)
    torch.testing.assert_close(f1, ref, atol=1e-5, rtol=1e-5)


def test_fresh_encoder_is_identity_and_imagenet_baseline_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    fresh = CARegEncoder("mobilenet_v2", weights=None, input_size=(64, 64)).eval()
    base = imagenet_encoder("mobilenet_v2", input_size=(64, 64), weights=None)
    base.trunk.load_state_dict(fresh.trunk.state_dict())
    with torch.no_grad():
        ref = fresh.trunk(x)
        out_fresh, out_base = fresh(x), base(x)
    eye = np.broadcast_to(np.eye(2, 3), (2, 3, 2, 3))
    for k in range(3):
        torch.testing.assert_close(out_fresh[k], ref[k], atol=1e-5, rtol=0)
        assert torch.equal(out_base[k], ref[k])  # identity mode: no resampling at all
    for t in (out_fresh[3], out_fresh[4], out_base[3], out_base[4]):
        np.testing.assert_array_equal(t.numpy(), eye)
    assert base.meta().trained is False and base.meta().stn_mode == "identity"


def test_meta_and_hash(encoder):
    meta = encoder.meta()
    assert meta.backbone == "mobilenet_v2" and meta.input_size == (64, 64)
    assert meta.channels == (24, 32, 96) and meta.stn_mode == "affine"
    h = encoder.encoder_hash()
    assert h == meta.encoder_hash and len(h) == 64
    # independent recomputation of the documented recipe
    import hashlib
    ref = hashlib.sha256()
    sd = encoder.state_dict()
    for k in sorted(sd):
        if not k.endswith("num_batches_tracked"):
            ref.update(k.encode())
            ref.update(sd[k].float().numpy().astype("<f4").tobytes())
    assert h == ref.hexdigest()
    with torch.no_grad():
        encoder.stn[2].fc[2].bias[0] += 1e-3
    try:
        assert encoder.encoder_hash() != h
    finally:
        with torch.no_grad():
            encoder.stn[2].fc[2].bias[0] -= 1e-3


def test_bad_arguments_raise_caregerror():
    with pytest.raises(UserInputError, match="stn_mode"):
        CARegEncoder("mobilenet_v2", "wobble", weights=None)
    with pytest.raises(UserInputError, match="multiples of 16"):
        CARegEncoder("mobilenet_v2", weights=None, input_size=(100, 100))


def test_exports_gridsample_without_affinegrid(encoder, tmp_path):
    """The warp must reach ONNX as GridSample (opset >= 16), never AffineGrid."""
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "enc.onnx"
    torch.onnx.export(encoder, (torch.randn(1, 3, 64, 64),), str(path), opset_version=17,
                      input_names=["image"], output_names=["feat1", "feat2", "feat3", "theta",
                                                           "theta_inv"], dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "GridSample" in ops and "AffineGrid" not in ops
