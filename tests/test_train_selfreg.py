"""Self-registration loss and the per-image rotation diagnostic: values, not shapes.

* the self term is exactly −1 when nothing moves, higher under a rotation, and
  lowered only by an STN that undoes the augmentation;
* --self-weight 0 trains bit-identically to the registration-only step;
* val_slope's sign: an encoder that registers each image by exhaustive search
  (no use of the project's θ algebra) must read as slope −1.
"""
import json
import math

import numpy as np
import pytest
import torch

import careg_edge.lab.train.data as data_mod
import careg_edge.lab.train.loop as loop_mod
import careg_edge.lab.train.losses as losses_mod
from careg_edge.encoder.stn import base_grid, invert, warp
from careg_edge.lab.synth_categories import make_category
from careg_edge.lab.train import (StepTerms, TrainConfig, angle_fit, build, heldout_rotation,
                                  normaliser, rotation_theta, set_train_mode, step_terms, train)


def _cfg(tmp_path=None, **kw):
    base = dict(roots=[], out=str(tmp_path / "run") if tmp_path else "runs/x", backbone="mobilenet_v2",
                weights=None, image_size=64, k_shot=1, batch_size=2, steps=2, lr=0.05,
                progress=False, stn_mode="affine", max_rotation=0, max_scale=0, max_translation=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def parts():
    """Four 64-px synthetic plates: query pair + one support each (uint8 NCHW)."""
    x = torch.from_numpy(make_category("plate", 4, 64, seed=3)).permute(0, 3, 1, 2).contiguous()
    return x[:2], x[2:].unsqueeze(1)


def _model(cfg):
    torch.manual_seed(0)
    enc, head = build(cfg)
    set_train_mode(enc, head, cfg)
    return enc, head, normaliser(enc.trunk, "cpu")


def _fixed_aug(monkeypatch, theta):
    # every query gets the same known augmentation A
    monkeypatch.setattr(losses_mod, "random_affine", lambda n, cfg, gen: theta.expand(n, 2, 3).clone())


def _self_term(cfg, parts, enc=None):
    enc, head, norm = _model(cfg) if enc is None else enc
    q, s = parts
    terms = step_terms(enc, head, norm, q, s, cfg, torch.Generator().manual_seed(0))
    return float(terms.self_term.detach())


def test_self_loss_is_minus_one_without_motion(parts):
    assert _self_term(_cfg(), parts) == pytest.approx(-1.0, abs=1e-5)


def test_self_loss_rises_under_rotation_with_identity_stn(parts, monkeypatch):
    _fixed_aug(monkeypatch, rotation_theta(torch.tensor([math.radians(30.0)])))
    assert _self_term(_cfg(), parts) > -0.9  # misaligned copies of the same image


def test_only_an_stn_that_undoes_the_augmentation_lowers_it(parts, monkeypatch):
    """A = shift by a quarter image; force stage-1's STN to A⁻¹ for the augmented
    queries (rows 0..b-1 of the batch) and identity for the rest."""
    a = torch.tensor([[[1.0, 0.0, 0.25], [0.0, 1.0, -0.125]]])
    _fixed_aug(monkeypatch, a)
    cfg = _cfg()
    identity = _self_term(cfg, parts)
    enc, head, norm = _model(cfg)
    stn1, b = enc.stn[0], 2

    def undo(x):
        theta = torch.eye(2, 3).repeat(x.shape[0], 1, 1)
        theta[:b] = invert(a)
        return theta
    stn1.theta = undo
    undone = _self_term(cfg, parts, (enc, head, norm))
    assert undone < identity - 0.1, (undone, identity)
    assert undone < -0.9


def _legacy_step_loss(enc, head, norm, query, support, cfg, gen):
    """The registration-only step as it was before the self term (verbatim)."""
    from careg_edge.encoder.heads import inside_image
    from careg_edge.encoder.stn import compose
    b, k = support.shape[:2]
    aug = data_mod.random_affine(b, cfg, gen)
    q = data_mod.augment(norm(query), aug)
    x = torch.cat([q, norm(support.flatten(0, 1))])
    *feats, theta, _ = enc(x)
    qf = [f[:b] for f in feats]
    sf = [f[b:].reshape(b, k, *f.shape[1:]) for f in feats]
    theta = theta.detach()
    theta = torch.cat([compose(aug.to(theta).unsqueeze(1), theta[:b]), theta[b:]])
    valid = inside_image(theta, [f.shape[-2:] for f in feats])
    masks = [v[:b] & v[b:].reshape(b, k, *v.shape[1:]).all(dim=1) for v in valid]
    return head(qf, sf, masks)


def test_self_weight_zero_is_bit_identical_to_registration_only(tmp_path, monkeypatch):
    from careg_edge.encoder.checkpoint import load
    kw = dict(synthetic=2, synthetic_images=5, holdout=1, eval_every=1, steps=3, max_rotation=30,
              max_scale=0.1, max_translation=0.1, self_weight=0.0, theta_weight=0.0,
              max_grad_norm=0.0)
    new = load(train(_cfg(tmp_path / "new", **kw)))
    log_new = [json.loads(s) for s in open(tmp_path / "new" / "run" / "train_log.jsonl")][1:]
    monkeypatch.setattr(loop_mod, "step_terms",
                        lambda *a: StepTerms(_legacy_step_loss(*a), None, None, [1], True))
    old = load(train(_cfg(tmp_path / "old", **kw)))
    log_old = [json.loads(s) for s in open(tmp_path / "old" / "run" / "train_log.jsonl")][1:]
    assert new.encoder.encoder_hash() == old.encoder.encoder_hash()
    for k, v in new.head_state.items():
        assert torch.equal(v, old.head_state[k]), k
    assert [r["loss"] for r in log_new] == [r["loss"] for r in log_old]
    assert all(r["loss_self"] is None and r["loss"] == r["loss_reg"] for r in log_new)
    monkeypatch.undo()
    # and the weight is really used when > 0: same first step, different loss
    w = train(_cfg(tmp_path / "w", **dict(kw, self_weight=0.5, steps=1)))
    rec = [json.loads(s) for s in open(tmp_path / "w" / "run" / "train_log.jsonl")][1]
    assert rec["loss_reg"] == pytest.approx(log_new[0]["loss_reg"], abs=0.05)  # BN batch differs
    assert rec["loss"] == pytest.approx(rec["loss_reg"] + 0.5 * rec["loss_self"], abs=1e-6)
    assert -1.0 <= rec["loss_self"] < 0 and w.is_file()


# ---------------------------------------------------------------- diagnostic
class SearchRegistrar(torch.nn.Module):
    """A stand-in encoder whose "STN" registers every input onto the closest of
    some reference images by exhaustive search over rotations. It defines
    "undoes the rotation" operationally (the warp that best restores the image),
    so it checks the sign of val_slope without trusting stn.compose/invert."""

    def __init__(self, refs: torch.Tensor, max_deg: float = 45.0, step_deg: float = 0.5):
        super().__init__()
        self.refs = refs
        n = int(round(2 * max_deg / step_deg)) + 1
        self.cands = rotation_theta(torch.deg2rad(torch.linspace(-max_deg, max_deg, n)))
        h, w = refs.shape[-2:]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.disk = (xx ** 2 + yy ** 2) < 0.6 ** 2  # away from the clamped corners

    def forward(self, x):
        b, c = x.shape[0], len(self.cands)
        xr = x.repeat_interleave(c, 0)
        th = self.cands.repeat(b, 1, 1)
        moved = warp(xr, th, base_grid(*x.shape[-2:])).reshape(b, c, 1, *x.shape[1:])
        err = ((moved - self.refs[None, None]) ** 2)[..., self.disk].mean(-1).mean(-1)  # [b,c,refs]
        best = err.min(dim=2).values.argmin(dim=1)
        theta = self.cands[best].unsqueeze(1).expand(b, 3, 2, 3)
        return x, x, x, theta, invert(theta)


def _smooth_images(n, size, seed):
    import cv2
    rng = np.random.default_rng(seed)
    ims = [cv2.resize(rng.uniform(0, 255, (6, 6, 3)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_CUBIC) for _ in range(n)]
    return torch.from_numpy(np.clip(np.stack(ims), 0, 255).astype(np.uint8)).permute(0, 3, 1, 2)


def test_val_slope_is_minus_one_for_an_encoder_that_undoes_each_rotation():
    held = {"a": _smooth_images(4, 32, 0), "b": _smooth_images(3, 32, 1)}
    norm = lambda x: x.float() / 255  # noqa: E731
    refs = norm(torch.cat(list(held.values())))
    cfg = TrainConfig(roots=[], max_rotation=30)
    slope, corr = heldout_rotation(SearchRegistrar(refs), held, norm, cfg)
    assert slope == pytest.approx(-1.0, abs=0.05) and corr < -0.99, (slope, corr)


def test_val_slope_is_zero_for_identity_and_common_rotation():
    held = {"a": _smooth_images(3, 64, 2)}
    cfg = _cfg(max_rotation=30)
    enc, _, norm = _model(cfg)
    slope, corr = heldout_rotation(enc, held, norm, cfg)  # untrained: exact identity
    assert slope == 0.0 and math.isnan(corr)
    with torch.no_grad():  # one common 10° rotation for every image
        enc.stn[2].fc[2].bias[0] = math.radians(10)
    slope, _ = heldout_rotation(enc, held, norm, cfg)
    assert abs(slope) < 1e-6
    assert enc.training  # the diagnostic restores the mode it found


def test_angle_fit_values_and_wrap():
    a = np.radians(np.linspace(-30, 30, 7))
    s, r = angle_fit(a, -a + 0.1)
    assert s == pytest.approx(-1.0) and r == pytest.approx(-1.0)
    # undoing around a common 180° rotation: predictions straddle ±π
    pred = np.angle(np.exp(1j * (math.pi - 0.5 * a)))
    s, r = angle_fit(a, pred)
    assert s == pytest.approx(-0.5) and r == pytest.approx(-1.0)
    s, r = angle_fit(np.zeros(4), np.ones(4))
    assert math.isnan(s) and math.isnan(r)
