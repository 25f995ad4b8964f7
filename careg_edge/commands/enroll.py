"""`careg-edge enroll`: a few good images of a product -> a profile file (.careg)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserInputError
from ..estimators.registry import NAMES as ESTIMATORS
from ..postprocess import DEFAULT_IMAGE_SCORE


def pick_shots(files, shots, seed):
    """Seeded random subset of the support images (sorted, so the choice is stable)."""
    if shots is None:
        return files
    if shots > len(files):
        raise UserInputError(f"--shots {shots}: only {len(files)} images in --support; "
                             f"lower --shots or add images")
    import numpy as np
    idx = np.random.default_rng(seed).choice(len(files), shots, replace=False)
    return [files[i] for i in sorted(idx)]


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UserInputError(f"-o {out}: file exists; pass --force to overwrite it")
    if not out.parent.exists():
        raise UserInputError(f"-o {out}: folder {out.parent} does not exist")


def _enroll(insp, files, estimator, augment, seed, target_fpr, s, image_score):
    kwargs = {"estimator": estimator, "augment": augment, "seed": seed, "image_score": image_score}
    if target_fpr is not None:
        kwargs["target_fpr"] = target_fpr
    paths = [str(f) for f in files]
    if s.quiet:
        return insp.enroll(paths, **kwargs)
    from ..progress import Progress

    with Progress(100, "enrolling") as bar:
        def progress(frac, stage=""):
            step = int(round(float(frac) * 100)) - bar.done
            if step > 0:
                bar.update(step, stage)
        return insp.enroll(paths, progress=progress, **kwargs)


def describe(profile, path: Path) -> list:
    """Human lines about a fresh profile: augmentations, size, threshold, expected rates."""
    info = profile.info or {}
    aug = info.get("augment") or {}
    if isinstance(aug, dict):
        groups, ops = aug.get("chosen"), aug.get("ops") or []
        aug_txt = (f"{', '.join(groups)} ({len(ops)} views per image)" if groups
                   else ", ".join(ops) or "none")
    else:
        aug_txt = ", ".join(map(str, aug)) if isinstance(aug, (list, tuple)) else str(aug)
    lines = [f"augmentations: {aug_txt}",
             f"profile: {path} ({path.stat().st_size / 1e6:.2f} MB on disk, "
             f"{profile.nbytes / 1e6:.2f} MB state, {profile.estimator})",
             f"threshold: {profile.threshold:.6g}"]
    cal = info.get("calibration") or {}
    if cal.get("target_fpr") is not None:
        lines.append(f"target false-alarm rate: {float(cal['target_fpr']):.1%} on unseen good parts")
    loo, prior = cal.get("loo_scores"), cal.get("prior_params") or {}
    if loo:
        cats = prior.get("categories")
        lines.append(f"threshold from: {len(loo)} leave-one-out scores ({min(loo):.4g}-{max(loo):.4g})"
                     + (f", tail prior of {len(cats)} other categories" if cats else ", no prior")
                     + "; re-set it on the line with `careg-edge calibrate` or `run --learn N`")
    spread = prior.get("fpr_spread")
    if spread:
        lines.append(f"in other categories' K={prior.get('k_prior')} enrollments this rule gave "
                     f"false alarms of {spread['p50']:.1%} (median), {spread['p90']:.1%} (90th "
                     f"percentile), {spread['max']:.1%} (worst of {spread['n']}): one enrollment can "
                     "land far from the target; measure it on the line")
    rate = cal.get("expected_detection_rate")
    lines.append(f"expected detection rate: {float(rate):.1%} (on synthetic defects)" if rate is not None
                 else "expected detection rate: not estimated (no synthetic-defect calibration stored)")
    return lines


EPILOG = """\b
Examples:
  careg-edge enroll --support ./good -o part.careg
  careg-edge enroll --support 'line3/*.png' --shots 8 --estimator padim -o line3.careg --force
"""


@click.command("enroll", epilog=EPILOG)
@click.option("--support", required=True, metavar="DIR|GLOB",
              help="Good images of the product: a folder or a quoted glob.")
@click.option("--model", default=None, metavar="PATH",
              help="Encoder: .ckpt checkpoint, .onnx, .engine or imagenet:<backbone>. "
                   "Default: the encoder bundled with careg-edge.")
@click.option("--estimator", type=click.Choice(ESTIMATORS), default="patchcore", show_default=True,
              help="Statistics of the good images: PatchCore memory bank (best with very few "
                   "images), PaDiM Gaussian per position, OrthoAD low-rank Gaussian.")
@click.option("--shots", type=click.IntRange(min=1), default=None,
              help="Use a seeded random subset of N support images (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --shots and augmentation.")
@click.option("--augment", default="auto", show_default=True, metavar="auto|none|LIST",
              help="Support augmentation: auto (chosen by distribution distance), none, regad, "
                   "or a comma list of groups such as small_rotation,brightness.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="False-alarm rate on good parts that the threshold aims at (default: the library's).")
@click.option("--image-score", default=DEFAULT_IMAGE_SCORE, show_default=True,
              metavar="top<P>%|max|mean",
              help="Image score from the anomaly map: the mean of its highest P % (default "
                   "top20%, measured best on both real categories), its maximum (max), or the "
                   "mean of the whole map.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Profile file to write (.careg).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def command(support, model, estimator, shots, seed, augment, target_fpr, image_score, output, force):
    """Enroll a product: fit a profile from a few good images.

    Nothing is trained; the encoder's features of the (augmented) support
    images are summarised by the estimator, and the threshold is set from good
    images only. Prints the chosen augmentations, the profile size, the
    threshold and the expected detection rate.
    """
    from ..cli_context import make_inspector, settings
    from ..imageio import list_images

    s = settings()
    check_output(output, force)
    files = pick_shots(list_images(support, what="--support"), shots, seed)
    s.info(f"support: {len(files)} images from {support}")
    insp = make_inspector(model)
    profile = _enroll(insp, files, estimator, augment, seed, target_fpr, s, image_score)
    check_output(output, force)  # something may have appeared while we worked
    profile.save(output)
    for line in describe(profile, output):
        s.info(line)
    s.info(f"next: careg-edge run --profile {output} --camera 0")
