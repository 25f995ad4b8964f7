"""`careg-edge calibrate`: re-set a profile's threshold from more good images, or to a value."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserInputError

EPILOG = """\b
Examples:
  careg-edge calibrate --profile part.careg --good line3/good/
  careg-edge calibrate --profile part.careg --good 'shift2/*.png' --target-fpr 0.005 -o part2.careg
  careg-edge calibrate --profile part.careg --threshold 0.42
  careg-edge calibrate --profile part.careg          (shows the threshold history)
"""


@click.command("calibrate", epilog=EPILOG)
@click.option("--profile", "profile_path", required=True, type=click.Path(dir_okay=False),
              help="Profile (.careg) whose threshold to re-set; the estimator is not re-fitted.")
@click.option("--good", default=None, metavar="DIR|GLOB",
              help="Good images of the product (a folder or a quoted glob); unreadable files "
                   "are named and skipped.")
@click.option("--target-fpr", type=float, default=0.01, show_default=True,
              help="False-alarm rate on good parts the new threshold aims at.")
@click.option("--threshold", "value", default=None, metavar="X",
              help="Set this threshold instead (a finite number above 0; no images needed).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the re-calibrated profile here (default: in place, atomically).")
@click.option("--model", default=None, metavar="PATH",
              help="Encoder the profile was enrolled with (default: the bundled one).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]),
              default=None, help="Encoder runtime for scoring --good (overrides the global "
                                 "--backend).")
def command(profile_path, good, target_fpr, value, output, model, backend):
    """Re-set a profile's threshold without re-enrolling.

    Scores the --good images with the profile as it is and sets the threshold
    at --target-fpr false alarms on them, or sets --threshold X. Prints the
    threshold before and after, how often each flags those good images, and
    the profile's threshold history (every change is kept in the profile).
    Without --good or --threshold it only shows that history.
    """
    from .. import Profile
    from ..cli_context import settings
    from ..recalibrate import explicit, history_lines, report_lines

    s = settings()
    if good is not None and value is not None:
        raise UserInputError("give --good DIR|GLOB or --threshold X, not both")
    if not Path(profile_path).is_file():
        raise UserInputError(f"--profile {profile_path}: file not found")
    if output is not None and not output.parent.exists():
        raise UserInputError(f"-o {output}: folder {output.parent} does not exist")
    if backend is not None:
        s.backend = backend
    profile = Profile.load(profile_path)
    name = Path(profile_path).name
    if value is not None:
        change = explicit(profile, value)
    elif good is not None:
        change = _from_good(profile, name, good, target_fpr, model, s)
    else:
        click.echo(f"{name}: threshold {profile.threshold:.6g}; history:")
        click.echo("\n".join(history_lines(profile)))
        return
    written = profile.save(output or profile_path)
    click.echo("\n".join(report_lines(change, name)))
    click.echo(f"profile: {written}; threshold history:")
    click.echo("\n".join(history_lines(profile)))


def _from_good(profile, name, good, target_fpr, model, s):
    """Score the readable --good images with the profile as it is; threshold from them."""
    from ..calibration.images import GoodImages
    from ..calibration.threshold import NotEnoughGood, check_target, needed_images
    from ..cli_context import make_inspector
    from ..recalibrate import from_scores
    from .run import check_profiles

    need = needed_images(check_target(target_fpr))
    imgs = GoodImages(good, what="--good")
    if len(imgs.files) < need:  # before loading the encoder or decoding anything
        raise NotEnoughGood(f"--good {good}: {len(imgs.files)} images; a threshold at "
                            f"{target_fpr:.1%} false alarms needs at least {need} good images")
    insp = make_inspector(model)
    check_profiles({name: profile}, insp)
    s.info(f"scoring {len(imgs.files)} images from {good} with {name}")
    scores = []
    for chunk, _ in imgs.chunks():
        scores += [float(r.score) for r in insp.inspect_batch(chunk, profile)]
    if imgs.unreadable:  # a warning, not an error: the readable ones are used
        click.echo(f"careg-edge: warning: --good {good}: {len(imgs.unreadable)} unreadable "
                   f"file(s) skipped: {imgs.unreadable_names()}", err=True)
    return from_scores(profile, scores, target_fpr, source=_source(good),
                       what=f"--good {good} ({len(imgs.unreadable)} unreadable skipped)"
                       if imgs.unreadable else f"--good {good}")


def _source(good: str) -> str:
    """What the history records: a folder as an absolute path, a glob as typed."""
    return good if any(c in good for c in "*?[") else str(Path(good).resolve())
