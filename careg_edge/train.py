"""CAReg registration training on normal images (needs torch).

Data: any number of dataset roots in the MVTec AD layout. Each category
contributes CAT/train/good (and CAT/validation/good when present); a `test/`
folder is never listed, opened or read. Categories stay separate because every
step pairs a query with k support images of its own category. The query gets a
random affine (rotation, scale, translation) so the STNs have a misalignment
to undo; the loss (encoder/heads.py) pulls the registered query towards the
averaged support. A second, self-registration term compares the registered maps
of the augmented query with those of the same query unaugmented: nothing but an
STN that undoes the augmentation can lower it (the heads cannot absorb a
misalignment of an image with itself). Synthetic normal categories
(synth_categories.py) can be added to the real ones with `synthetic=N`.

Optimiser as in the paper: SGD, momentum 0.9, lr 1e-4, cosine schedule.
Checkpoints (encoder/checkpoint.py) are written atomically every `save_every`
steps and at the end as OUT/last.ckpt; `resume=True` continues from it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .errors import UserInputError
from .imageio import IMAGE_SUFFIXES, read_image

GOOD_FOLDERS = ("train/good", "validation/good")  # the only folders training reads


@dataclass
class TrainConfig:
    roots: List[str]
    out: str = "runs/train"
    exclude: List[str] = field(default_factory=list)
    backbone: str = "resnet50v2"
    weights: Optional[str] = "default"      # ImageNet init of the trunk; None = random
    stn_mode: str = "rotation_scale"
    image_size: int = 224
    k_shot: int = 2                         # support images per query
    batch_size: int = 4                     # queries per step
    epochs: int = 1
    steps: int = 0                          # > 0 overrides epochs
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    frozen_stages: int = 0                  # 1 = stem+stage1 frozen, ... 3 = whole trunk
    freeze_bn: bool = True                  # keep the trunk's BN statistics (small CPU batches)
    max_rotation: float = 30.0              # degrees, query augmentation
    max_scale: float = 0.1
    max_translation: float = 0.1            # fraction of the half-width (normalised coords)
    holdout: int = 0                        # images per category kept out for the val cosine
    self_weight: float = 1.0                # weight of the self-registration (equivariance) loss
    synthetic: int = 0                      # first N categories of synth_categories.CATEGORIES
    synthetic_images: int = 200             # images per synthetic category
    eval_every: int = 0
    save_every: int = 200
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    resume: bool = False
    progress: bool = True


# ---------------------------------------------------------------- data
def discover(roots: Sequence, exclude: Sequence[str] = (), min_images: int = 2) -> Dict[str, List[Path]]:
    """{"root/CAT": sorted normal image files} over every root (MVTec layout)."""
    if not roots:
        raise UserInputError("no dataset roots given; pass at least one folder in MVTec AD layout")
    cats: Dict[str, List[Path]] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise UserInputError(f"{root}: dataset root does not exist or is not a folder")
        found = [d for d in sorted(root.iterdir()) if (d / "train" / "good").is_dir()]
        if (root / "train" / "good").is_dir():  # a single category given directly
            found = [root]
        if not found:
            raise UserInputError(f"{root}: no CATEGORY/train/good folders (MVTec AD layout expected)")
        for d in found:
            if d.name in exclude:
                continue
            files = [f for g in GOOD_FOLDERS if (d / g).is_dir() for f in sorted((d / g).iterdir())
                     if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            if len(files) < min_images:
                raise UserInputError(f"{d}: {len(files)} normal images, need at least {min_images} "
                                     f"(1 query + k support); add images or --exclude {d.name}")
            cats[f"{root.name}/{d.name}"] = files
    unknown = set(exclude) - {Path(c).name for r in roots for c in _cat_names(Path(r))}
    if unknown:
        raise UserInputError(f"--exclude {sorted(unknown)[0]}: no such category under the roots")
    if not cats:
        raise UserInputError("every category was excluded; nothing to train on")
    return cats


def _cat_names(root: Path):
    if (root / "train" / "good").is_dir():
        return [root.name]
    return [d.name for d in root.iterdir() if (d / "train" / "good").is_dir()]


def load_images(files: Sequence[Path], size: int) -> torch.Tensor:
    """Decode + resize once, kept in memory as uint8 [N,3,S,S] (small sets, CPU speed)."""
    from .preprocess import resize
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        out[i] = resize(read_image(f), (size, size))  # unreadable file -> one-line error
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def random_affine(n: int, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """[n,2,3] random rotation·scale + translation (the query's misalignment)."""
    u = lambda: torch.rand(n, generator=gen) * 2 - 1  # noqa: E731
    a = u() * math.radians(cfg.max_rotation)
    s = 1 + u() * cfg.max_scale
    c, si = torch.cos(a) * s, torch.sin(a) * s
    t = torch.stack([u(), u()], 1) * cfg.max_translation
    return torch.stack([torch.stack([c, -si, t[:, 0]], 1), torch.stack([si, c, t[:, 1]], 1)], 1)


def augment(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    from .encoder.stn import base_grid, warp
    return warp(x, theta.to(x), base_grid(*x.shape[-2:]).to(x))


class PairSampler:
    """Each draw: a category (uniformly, so small categories count), a query and
    k distinct other images of that category as its support set."""

    def __init__(self, images: Dict[str, torch.Tensor], k: int, seed: int):
        self.names, self.images, self.k = sorted(images), images, k
        self.rng = np.random.default_rng(seed)

    def draw(self, batch: int):
        q, s = [], []
        for _ in range(batch):
            imgs = self.images[self.names[self.rng.integers(len(self.names))]]
            idx = self.rng.choice(len(imgs), self.k + 1, replace=False)
            q.append(imgs[idx[0]])
            s.append(imgs[idx[1:]])
        return torch.stack(q), torch.stack(s)  # [B,3,S,S], [B,k,3,S,S] uint8


# ---------------------------------------------------------------- model
def normaliser(trunk, device):
    mean = torch.tensor(trunk.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(trunk.std, device=device).view(1, 3, 1, 1)
    return lambda x: (x.to(device, torch.float32) * trunk.scale - mean) / std


def build(cfg: TrainConfig):
    from .encoder.careg import CARegEncoder
    from .encoder.heads import RegistrationHead
    enc = CARegEncoder(cfg.backbone, cfg.stn_mode, weights=cfg.weights,
                       input_size=(cfg.image_size, cfg.image_size), trained=True)
    if cfg.stn_mode == "identity":
        raise UserInputError("--stn-mode identity has nothing to train; pick another mode")
    for name, p in enc.trunk.named_parameters():
        p.requires_grad_(enc.trunk.stage_of(name) >= cfg.frozen_stages)
    return enc, RegistrationHead(enc.trunk.channels)


def set_train_mode(enc, head, cfg: TrainConfig) -> None:
    enc.train()
    head.train()
    if cfg.freeze_bn:
        for m in enc.trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def step_terms(enc, head, norm, query, support, cfg, gen):
    """One step's loss terms -> (registration loss, self-registration loss or None).

    Registration: augmented queries vs their k-shot supports, through the heads.
    Self-registration (only when cfg.self_weight > 0): the unaugmented queries ride
    in the same batch and their registered maps are the stop-gradient target of the
    augmented queries' registered maps. With self_weight == 0 nothing extra is
    encoded, so the step is exactly the registration-only step."""
    from .encoder.heads import inside_image, self_registration_loss
    from .encoder.stn import compose
    b, k = support.shape[:2]
    aug = random_affine(b, cfg, gen)
    plain = norm(query)
    q = augment(plain, aug)
    with_self = cfg.self_weight > 0
    n = b * (1 + k)  # queries + supports; the plain queries (if any) follow
    batch = [q, norm(support.flatten(0, 1))] + ([plain] if with_self else [])
    *feats, theta, _ = enc(torch.cat(batch))
    qf = [f[:b] for f in feats]
    sf = [f[b:n].reshape(b, k, *f.shape[1:]) for f in feats]
    # compare only positions that see the image in the query and in every support
    # (the query's own augmentation also moved pixels in from the border)
    theta = theta.detach()
    theta = torch.cat([compose(aug.to(theta).unsqueeze(1), theta[:b]), theta[b:]])
    valid = inside_image(theta, [f.shape[-2:] for f in feats])
    masks = [v[:b] & v[b:n].reshape(b, k, *v.shape[1:]).all(dim=1) for v in valid]
    reg = head(qf, sf, masks)
    if not with_self:
        return reg, None
    # same rule for the self term: positions inside the image in both copies
    self_masks = [v[:b] & v[n:] for v in valid]
    return reg, self_registration_loss(qf, [f[n:] for f in feats], self_masks)


def step_loss(enc, head, norm, query, support, cfg, gen):
    """One training step's total loss: registration + self_weight * self-registration."""
    reg, self_term = step_terms(enc, head, norm, query, support, cfg, gen)
    return reg if self_term is None else reg + cfg.self_weight * self_term


@torch.no_grad()
def registration_cosine(enc, query: torch.Tensor, support: torch.Tensor, stage: int = 2) -> float:
    """Mean per-position cosine between registered maps of normalised query/support
    batches (what the estimators compare); higher = better registered."""
    was = enc.training
    enc.eval()
    fq, fs = enc(query)[stage], enc(support)[stage]
    enc.train(was)
    return float(torch.nn.functional.cosine_similarity(fq, fs, dim=1).mean())


# ---------------------------------------------------------------- loop
def train(cfg: TrainConfig) -> Path:
    """Run training; returns the path of the final checkpoint."""

    check_options(cfg)
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    images = training_images(cfg)
    held = {c: v[-cfg.holdout:] for c, v in images.items()} if cfg.holdout > 0 else {}
    images = {c: v[:-cfg.holdout] for c, v in images.items()} if cfg.holdout > 0 else images
    n_img = sum(len(v) for v in images.values())
    total = cfg.steps if cfg.steps > 0 else max(1, cfg.epochs * math.ceil(n_img / cfg.batch_size))

    enc, head = build(cfg)
    enc.to(device), head.to(device)
    params = _named_trainable(enc, head)
    opt = torch.optim.SGD([p for _, p in params], lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    out = Path(cfg.out)
    last = out / "last.ckpt"
    start = _resume(last, cfg, enc, head, opt, params) if cfg.resume else 0
    norm = normaliser(enc.trunk, device)
    sampler = PairSampler(images, cfg.k_shot, cfg.seed + start)
    gen = torch.Generator().manual_seed(cfg.seed + 1 + start)
    config = dict(asdict(cfg), categories={c: len(v) for c, v in images.items()}, total_steps=total)
    log = _Log(out / "train_log.jsonl", fresh=start == 0)
    bar = _bar(total, start, cfg.progress)
    set_train_mode(enc, head, cfg)
    step = start
    for step in range(start, total):
        t0 = time.perf_counter()
        _set_lr(opt, cfg.lr, step, total)
        q, s = sampler.draw(cfg.batch_size)
        reg, self_term = step_terms(enc, head, norm, q, s.to(device), cfg, gen)
        loss = reg if self_term is None else reg + cfg.self_weight * self_term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ips = cfg.batch_size * (cfg.k_shot + 1) / (time.perf_counter() - t0)
        rec = {"step": step + 1, "loss": loss.item(), "loss_reg": reg.item(),
               "loss_self": None if self_term is None else self_term.item(),
               "lr": opt.param_groups[0]["lr"], "images_per_s": round(ips, 2)}
        if held and cfg.eval_every > 0 and ((step + 1) % cfg.eval_every == 0 or step + 1 == total):
            rec["val_cosine"] = heldout_cosine(enc, held, norm, cfg)
            rec["val_slope"], rec["val_corr"] = heldout_rotation(enc, held, norm, cfg)
            set_train_mode(enc, head, cfg)
        log.write(rec)
        bar.update(1, f"loss {rec['loss']:.4f} {ips:.1f} img/s")
        if (step + 1) % max(cfg.save_every, 1) == 0 and step + 1 < total:
            _save(last, enc, head, opt, params, config, step + 1)
    bar.close()
    _save(last, enc, head, opt, params, config, total)
    return last


def check_options(cfg: TrainConfig) -> None:
    """Option values that cannot work: one line each, before any data is read."""
    from .synth_categories import CATEGORIES
    if cfg.k_shot < 1 or cfg.batch_size < 1:
        raise UserInputError("--k-shot and --batch-size must be at least 1")
    if not (math.isfinite(cfg.self_weight) and cfg.self_weight >= 0):
        raise UserInputError(f"--self-weight {cfg.self_weight}: must be a number >= 0 "
                             "(0 = registration loss only)")
    if not 0 <= cfg.synthetic <= len(CATEGORIES):
        raise UserInputError(f"--synthetic {cfg.synthetic}: must be 0..{len(CATEGORIES)} "
                             f"(categories in order: {', '.join(CATEGORIES)})")
    need = cfg.k_shot + 1 + max(cfg.holdout, 0)
    if cfg.synthetic and cfg.synthetic_images < need:
        raise UserInputError(f"--synthetic-images {cfg.synthetic_images}: need at least {need} "
                             "(1 query + k support + holdout per category)")
    if not cfg.roots and not cfg.synthetic:
        raise UserInputError("no dataset roots given; pass at least one folder in MVTec AD layout "
                             "or --synthetic N")
    if not cfg.roots and cfg.exclude:
        raise UserInputError(f"--exclude {cfg.exclude[0]}: applies to dataset roots, none given")


def training_images(cfg: TrainConfig) -> Dict[str, torch.Tensor]:
    """{category: uint8 [N,3,S,S]}: the discovered real categories, then the first
    cfg.synthetic synthetic ones as `synthetic/<name>` (each its own category)."""
    from .synth_categories import CATEGORIES, make_category
    images = {}
    if cfg.roots:
        cats = discover(cfg.roots, cfg.exclude, min_images=cfg.k_shot + 1 + max(cfg.holdout, 0))
        images = {c: load_images(f, cfg.image_size) for c, f in cats.items()}
    for name in CATEGORIES[:cfg.synthetic]:
        key = f"synthetic/{name}"
        if key in images:
            raise UserInputError(f"{key}: a dataset root is also named 'synthetic'; rename it "
                                 "or drop --synthetic")
        arr = make_category(name, cfg.synthetic_images, cfg.image_size, cfg.seed)
        images[key] = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    return images


def heldout_cosine(enc, held: Dict[str, torch.Tensor], norm, cfg: TrainConfig) -> float:
    """Registration cosine on held-out normal images: each held image, moved by a
    fixed random affine, against the next held image of its category."""
    gen = torch.Generator().manual_seed(12345)
    vals = []
    for name in sorted(held):
        imgs = held[name]
        if len(imgs) < 2:
            continue
        q = augment(norm(imgs), random_affine(len(imgs), cfg, gen))
        s = norm(torch.roll(imgs, 1, dims=0))
        vals.append(registration_cosine(enc, q, s))
    return float(np.mean(vals)) if vals else float("nan")


DIAG_SEED, DIAG_DRAWS = 54321, 2  # rotation diagnostic: fixed angles, 2 per held image


def rotation_theta(angles: torch.Tensor) -> torch.Tensor:
    """[n] radians -> [n,2,3] pure rotations about the image centre (augment's θ)."""
    c, s, z = torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)
    return torch.stack([torch.stack([c, -s, z], 1), torch.stack([s, c, z], 1)], 1)


def theta_angle(theta: torch.Tensor) -> torch.Tensor:
    """Rotation angle (radians) of [...,2,3] affines: atan2(θ[1,0], θ[0,0])."""
    return torch.atan2(theta[..., 1, 0], theta[..., 0, 0])


@torch.no_grad()
def heldout_rotation(enc, held: Dict[str, torch.Tensor], norm, cfg: TrainConfig):
    """Per-image registration check -> (slope, corr) of predicted vs applied angle.

    Each held-out image is rotated by DIAG_DRAWS known angles in ±max_rotation
    (fixed generator: the same angles at every evaluation); the prediction is the
    rotation of the stage-3 cumulative θ. augment samples the image at A·p, so the
    registered map, which samples at A·θ·p, is the original when θ = A⁻¹: an STN
    that undoes each rotation gives slope −1 (corr −1). One common rotation for
    every image gives slope ≈ 0 whatever its size (pooled over categories)."""
    gen = torch.Generator().manual_seed(DIAG_SEED)
    was = enc.training
    enc.eval()
    applied, predicted = [], []
    for name in sorted(held):
        imgs = held[name].repeat(DIAG_DRAWS, 1, 1, 1)
        ang = (torch.rand(len(imgs), generator=gen) * 2 - 1) * math.radians(cfg.max_rotation)
        theta = enc(augment(norm(imgs), rotation_theta(ang)))[3][:, 2]
        applied.append(ang)
        predicted.append(theta_angle(theta).cpu().double())
    enc.train(was)
    return angle_fit(torch.cat(applied).double().numpy(), torch.cat(predicted).numpy())


def angle_fit(applied: np.ndarray, predicted: np.ndarray):
    """Least-squares slope and Pearson correlation of predicted vs applied angle.
    Predictions are unwrapped around their circular mean first, so a common
    rotation near ±180° does not split the cloud. NaN when undefined (no spread)."""
    centre = math.atan2(np.sin(predicted).mean(), np.cos(predicted).mean())
    pred = centre + np.angle(np.exp(1j * (predicted - centre)))
    da, dp = applied - applied.mean(), pred - pred.mean()
    var_a, var_p = (da ** 2).sum(), (dp ** 2).sum()
    if var_a <= 1e-12:
        return float("nan"), float("nan")
    slope = float((da * dp).sum() / var_a)
    corr = float((da * dp).sum() / math.sqrt(var_a * var_p)) if var_p > 1e-12 else float("nan")
    return slope, corr


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available here; use --device cpu")
    return torch.device(name)


def _named_trainable(enc, head):
    return [(f"enc.{n}", p) for n, p in enc.named_parameters() if p.requires_grad] + \
           [(f"head.{n}", p) for n, p in head.named_parameters()]


def _set_lr(opt, base: float, step: int, total: int) -> None:
    lr = 0.5 * base * (1 + math.cos(math.pi * step / max(total, 1)))
    for g in opt.param_groups:
        g["lr"] = lr


def _save(path, enc, head, opt, params, config, step):
    from .encoder.checkpoint import save
    momentum = {n: opt.state[p]["momentum_buffer"] for n, p in params
                if p in opt.state and opt.state[p].get("momentum_buffer") is not None}
    save(path, enc, dict(config, progress={"step": step}), head=head, optim_state=momentum)


def _resume(path: Path, cfg, enc, head, opt, params) -> int:
    from .encoder.checkpoint import load
    if not path.is_file():
        return 0
    ck = load(path)
    same = (ck.config.get("backbone"), ck.config.get("stn_mode"), ck.config.get("image_size"))
    if same != (cfg.backbone, cfg.stn_mode, cfg.image_size):
        raise UserInputError(f"{path}: was trained with backbone/stn_mode/size {same}; resume with "
                             "the same options or choose another --out")
    enc.load_state_dict(ck.encoder.state_dict())
    head.load_state_dict(ck.head_state)
    for n, p in params:
        if n in ck.optim_state:
            opt.state[p]["momentum_buffer"] = ck.optim_state[n].to(p.device).clone()
    return int(ck.config.get("progress", {}).get("step", 0))


class _Log:
    """JSON lines of step, loss (loss_reg, loss_self), lr, images/s (and val_cosine,
    val_slope, val_corr): the learning curve."""

    def __init__(self, path: Path, fresh: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w" if fresh else "a")

    def write(self, rec):
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()


def _bar(total, start, enabled):
    from .progress import Progress
    return Progress(total, "train", enabled, initial=start)
