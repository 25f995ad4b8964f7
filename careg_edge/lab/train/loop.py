"""The training loop: options, model setup, SGD steps, dead-step recovery,
held-out diagnostics, checkpoints and the JSON-lines log.

Optimiser as in the paper: SGD, momentum 0.9, lr 1e-4, cosine schedule.
Checkpoints (encoder/checkpoint.py) are written atomically every `save_every`
steps and at the end as OUT/last.ckpt; `resume=True` continues from it. An
interrupt (Ctrl-C, `timeout -s INT`) saves the finished steps first and raises
TrainingInterrupted, so a run cut by a time limit is kept and resumable.

A dead step (losses.dead_reason: no valid position to compare, or a non-finite
θ, loss or gradient) is never applied: its gradients are dropped, it is counted
(`dead_steps` in every log record, `dead` naming the reason on the step), and
the STNs are moved back towards the identity (a non-finite one is rebuilt as
the identity), whose transforms always leave positions inside the image. So a
run that reaches such a state leaves it within a few steps instead of staying
there with no gradient.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

from ...errors import UserInputError
from .data import PairSampler, split_holdout, training_images
from .diagnostics import evaluate
from .losses import dead_reason, step_terms


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
    theta_weight: float = 1.0               # weight of the θ loss against the applied transform
    theta_anneal: float = 1.0               # share of theta_weight left at the last step (cosine)
    max_grad_norm: float = 1.0              # clip the total gradient norm (0 = no clipping)
    synthetic: int = 0                      # first N categories of synth_categories.CATEGORIES
    synthetic_images: int = 200             # images per synthetic category
    eval_every: int = 0
    save_every: int = 200
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    resume: bool = False
    progress: bool = True


def normaliser(trunk, device):
    mean = torch.tensor(trunk.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(trunk.std, device=device).view(1, 3, 1, 1)
    return lambda x: (x.to(device, torch.float32) * trunk.scale - mean) / std


def build(cfg: TrainConfig):
    from ...encoder.careg import CARegEncoder
    from ...encoder.heads import RegistrationHead
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


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the path of the final checkpoint."""
    check_options(cfg)
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    images, held = split_holdout(training_images(cfg), cfg.holdout)
    n_img = sum(len(v) for v in images.values())
    total = cfg.steps if cfg.steps > 0 else max(1, cfg.epochs * math.ceil(n_img / cfg.batch_size))

    enc, head = build(cfg)
    enc.to(device), head.to(device)
    params = _named_trainable(enc, head)
    opt = torch.optim.SGD([p for _, p in params], lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    out = Path(cfg.out)
    last = out / "last.ckpt"
    start, dead = _resume(last, cfg, enc, head, opt, params) if cfg.resume else (0, 0)
    norm = normaliser(enc.trunk, device)
    sampler = PairSampler(images, cfg.k_shot, cfg.seed + start)
    gen = torch.Generator().manual_seed(cfg.seed + 1 + start)
    config = dict(asdict(cfg), categories={c: len(v) for c, v in images.items()}, total_steps=total)
    log = _Log(out / "train_log.jsonl", fresh=start == 0, start=start)
    evaluating = bool(held) and cfg.eval_every > 0
    if evaluating and start == 0:  # the untrained reference: ImageNet trunk, identity STNs
        log.write(dict(step=0, **evaluate(enc, held, norm, cfg)))
    bar = _bar(total, start, cfg.progress)
    set_train_mode(enc, head, cfg)
    try:
        for step in range(start, total):
            t0 = time.perf_counter()
            _set_lr(opt, cfg.lr, step, total)
            theta_w = theta_weight_at(cfg, step, total)
            q, s = sampler.draw(cfg.batch_size)
            terms = step_terms(enc, head, norm, q, s.to(device), cfg, gen)
            loss = terms.total(cfg.self_weight, theta_w)
            opt.zero_grad(set_to_none=True)
            reason = dead_reason(terms, loss)
            grad_norm = None
            if reason is None:
                loss.backward()
                grad_norm = _clip(params, cfg.max_grad_norm)
                reason = None if math.isfinite(grad_norm) else "nonfinite-grad"
            if reason is None:
                opt.step()
            else:  # never applied: drop the gradients, bring the STNs back
                opt.zero_grad(set_to_none=True)
                recover(enc, opt)
                dead += 1
            ips = cfg.batch_size * (cfg.k_shot + 1) / (time.perf_counter() - t0)
            rec = _record(step + 1, loss, terms, opt, theta_w, ips, dead, reason, grad_norm)
            if evaluating and ((step + 1) % cfg.eval_every == 0 or step + 1 == total):
                rec.update(evaluate(enc, held, norm, cfg))
                set_train_mode(enc, head, cfg)
            log.write(rec)
            bar.update(1, f"loss {rec['loss']:.4f} {ips:.1f} img/s")
            if (step + 1) % max(cfg.save_every, 1) == 0 and step + 1 < total:
                _save(last, enc, head, opt, params, config, step + 1, dead)
    except KeyboardInterrupt:
        # Ctrl-C or `timeout -s INT`: keep every finished step (resumable), then stop
        bar.close()
        done = log.last_step   # applied and logged; a step cut between the two is redone
        if done > start:
            _save(last, enc, head, opt, params, config, done, dead)
        raise TrainingInterrupted(last if done > start or last.exists() else None, done, total)
    bar.close()
    _save(last, enc, head, opt, params, config, total, dead)
    return last


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by an interrupt; `checkpoint` holds the finished steps (None
    when no step finished and no earlier checkpoint exists)."""

    def __init__(self, checkpoint: Optional[Path], step: int, total: int):
        super().__init__(f"interrupted after step {step} of {total}")
        self.checkpoint, self.step, self.total = checkpoint, step, total


def theta_weight_at(cfg: TrainConfig, step: int, total: int) -> float:
    """θ-loss weight at `step`: cosine from theta_weight down to theta_anneal × it
    (a curriculum: the supervised term leads early, the feature terms refine)."""
    end = cfg.theta_weight * cfg.theta_anneal
    return end + (cfg.theta_weight - end) * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


def recover(enc, opt) -> None:
    """After a dead step: every STN halfway back to the identity (rebuilt as the
    identity when its weights or BN statistics are not finite: the dead step's
    forward pass has already updated those), and its momentum cleared so the
    next update does not push it straight back out."""
    for stn in enc.stn:
        stn_params = list(stn.parameters())
        tensors = stn_params + [t for t in stn.buffers() if t.is_floating_point()]
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            stn.reset_identity()
        else:
            stn.shrink_to_identity(0.5)
        for p in stn_params:
            opt.state.pop(p, None)


def _clip(params, max_norm: float) -> float:
    """Total gradient norm before clipping (inf/NaN when not finite). Clipped to
    max_norm when > 0: the localisation FCs see thousands of inputs at 224², so
    one large θ-loss gradient would otherwise throw a transform far off (the θ
    loss rose from 0.11 to 0.3-0.8 over 40 steps at lr 1e-3 without it)."""
    grads = [p for _, p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads])))


def _value(t) -> Optional[float]:
    return None if t is None else float(t.detach())


def _record(step, loss, terms, opt, theta_w, ips, dead, reason, grad_norm) -> dict:
    rec = {"step": step, "loss": float(loss.detach()), "loss_reg": _value(terms.reg),
           "loss_self": _value(terms.self_term), "loss_theta": _value(terms.theta_term),
           "theta_weight": theta_w, "lr": opt.param_groups[0]["lr"],
           "grad_norm": grad_norm, "images_per_s": round(ips, 2), "dead_steps": dead}
    if reason is not None:
        rec["dead"] = reason
    return rec


def check_options(cfg: TrainConfig) -> None:
    """Option values that cannot work: one line each, before any data is read."""
    from ..synth_categories import CATEGORIES
    if cfg.k_shot < 1 or cfg.batch_size < 1:
        raise UserInputError("--k-shot and --batch-size must be at least 1")
    if not (math.isfinite(cfg.self_weight) and cfg.self_weight >= 0):
        raise UserInputError(f"--self-weight {cfg.self_weight}: must be a number >= 0 "
                             "(0 = registration loss only)")
    if not (math.isfinite(cfg.theta_weight) and cfg.theta_weight >= 0):
        raise UserInputError(f"--theta-weight {cfg.theta_weight}: must be a number >= 0 "
                             "(0 = no loss on θ against the applied transform)")
    if not (math.isfinite(cfg.theta_anneal) and 0 <= cfg.theta_anneal <= 1):
        raise UserInputError(f"--theta-anneal {cfg.theta_anneal}: must be in 0..1 "
                             "(share of --theta-weight left at the last step; 1 = constant)")
    if not (math.isfinite(cfg.max_grad_norm) and cfg.max_grad_norm >= 0):
        raise UserInputError(f"--max-grad-norm {cfg.max_grad_norm}: must be a number >= 0 "
                             "(0 = no clipping)")
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


def _save(path, enc, head, opt, params, config, step, dead):
    from ...encoder.checkpoint import save
    momentum = {n: opt.state[p]["momentum_buffer"] for n, p in params
                if p in opt.state and opt.state[p].get("momentum_buffer") is not None}
    save(path, enc, dict(config, progress={"step": step, "dead_steps": dead}), head=head, optim_state=momentum)


def _resume(path: Path, cfg, enc, head, opt, params):
    """-> (step, dead steps so far) of OUT/last.ckpt, its weights and momentum loaded."""
    from ...encoder.checkpoint import load
    if not path.is_file():
        return 0, 0
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
    progress = ck.config.get("progress", {})
    return int(progress.get("step", 0)), int(progress.get("dead_steps", 0))


class _Log:
    """JSON lines of step, loss (loss_reg, loss_self, loss_theta), theta_weight, lr,
    images/s, dead_steps (and val_cosine, val_slope, val_corr): the learning curve.
    Step 0, when written, is the untrained reference."""

    def __init__(self, path: Path, fresh: bool, start: int = 0):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w" if fresh else "a")
        self.last_step = start

    def write(self, rec):
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        self.last_step = rec.get("step", self.last_step)


def _bar(total, start, enabled):
    from ...progress import Progress
    return Progress(total, "train", enabled, initial=start)
