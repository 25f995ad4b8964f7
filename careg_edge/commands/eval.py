"""`careg-edge eval`: the few-shot protocol over an MVTec-layout dataset."""
from pathlib import Path

import click

from ..errors import UserInputError
from ..estimators.registry import NAMES as ESTIMATORS
from ..postprocess import DEFAULT_IMAGE_SCORE, check_image_score


def _ints(text: str, opt: str):
    try:
        v = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        v = []
    if not v or min(v) < 1:
        raise UserInputError(f"{opt} {text!r}: give positive integers separated by commas, e.g. 1,2,4,8")
    return v


def _targets(text: str):
    """False-alarm targets: fractions in (0, 0.5), comma separated."""
    try:
        v = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        v = []
    if not v or not all(0 < t < 0.5 for t in v):
        raise UserInputError(f"--target-fpr {text!r}: give false-alarm rates as fractions in "
                             "(0, 0.5) separated by commas, e.g. 0.01,0.05")
    return sorted(set(v))


@click.command("eval")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Dataset root in the MVTec AD layout (ROOT/CAT/train/good, test/, ground_truth/).")
@click.option("--category", multiple=True, help="Category to evaluate (repeatable; default: all).")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(path_type=Path),
              help="Output folder: results.json, report.html, per-round cache (resumable).")
@click.option("--shots", default="1,2,4,8", show_default=True, help="Support-set sizes K.")
@click.option("--rounds", default=10, show_default=True, help="Support sets drawn per (category, K).")
@click.option("--estimator", default="patchcore", show_default=True,
              help=f"Estimator(s), comma separated: {', '.join(ESTIMATORS)}.")
@click.option("--localisation", type=click.Choice(["feature-unwarp", "registered-frame"]),
              default="feature-unwarp", show_default=True,
              help="Unwarp features to image coordinates before scoring, or score in the "
                   "registered frame and unwarp the heatmap.")
@click.option("--augment", default="auto", show_default=True, help="Support augmentation policy.")
@click.option("--model", default=None, help="Encoder: checkpoint, .onnx, .engine or imagenet:<backbone>.")
@click.option("--backend", default="auto", show_default=True,
              help="Encoder runtime: auto, torch, onnxruntime, onnxruntime-cuda, tensorrt.")
@click.option("--seed", default=0, show_default=True, help="Seed of the support-set draw and augmentation.")
@click.option("--support-sets", type=click.Path(path_type=Path), default=None,
              help="Folder of support-set JSON files to share across runs (default OUTDIR/support_sets).")
@click.option("--max-map-memory", default=2.0, show_default=True,
              help="GB of anomaly maps held at once (more = fewer passes over the test set).")
@click.option("--max-profile-memory", default=3.0, show_default=True,
              help="GB of enrolled profiles held at once (more = fewer passes over the "
                   "train/good and validation/good images scored for the line metrics).")
@click.option("--image-score", default=DEFAULT_IMAGE_SCORE, show_default=True, metavar="top<P>%|max|mean",
              help="Image score(s) from the anomaly map, comma separated, each evaluated as its "
                   "own method (see `careg-edge enroll --help`).")
@click.option("--target-fpr", default="0.01,0.05", show_default=True, metavar="RATES",
              help="False-alarm targets for the line metrics, comma separated: each threshold "
                   "is re-derived from the one enrollment's calibration and measured on every "
                   "good image not in the support.")
@click.option("--recalibrate", default=100, show_default=True, metavar="N",
              help="Re-calibration arm (0: off): per round, N unseen good images (seeded draw) "
                   "re-set each threshold as `careg-edge calibrate --good` would; measured on "
                   "the other unseen goods. Computed from stored scores: no re-enrollment.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(data, category, outdir, shots, rounds, estimator, localisation, augment, model,
            backend, seed, support_sets, max_map_memory, max_profile_memory, image_score,
            target_fpr, recalibrate, quiet):
    """Evaluate few-shot detection and localisation (image/pixel AUROC, PRO, F1-max,
    FPR and detection rate at the profile's own threshold), mean ± std over rounds,
    and the line metrics: at each --target-fpr, the false-alarm rate on every good
    image not in the support (train/good minus the support, test/good, validation/good),
    the detection rate at that threshold and the ROC's detection rate at the target.
    The calibration prior leaves the evaluated category out (prior_exclude).

    Example: careg-edge eval --data ../shared/data/mpdd -o runs/mpdd --shots 2,4,8 --rounds 3
    """
    from ..cli_context import make_inspector   # the global --device and --threads
    from ..lab.protocol import EvalConfig, evaluate
    from ..lab.report import markdown_tables, summarise, write_report

    if rounds < 1:
        raise UserInputError(f"--rounds {rounds}: must be at least 1")
    targets = _targets(target_fpr)
    if recalibrate < 0:
        raise UserInputError(f"--recalibrate {recalibrate}: give a number of good images, "
                             "or 0 to turn it off")
    if augment == "none" and 1 in _ints(shots, "--shots"):
        # checked before any work: K=1 without augmentation cannot calibrate a threshold
        raise UserInputError("--shots 1 with --augment none: one image and no augmentation leave "
                             "nothing to hold out for the threshold; drop 1 from --shots or augment")
    rules = [check_image_score(r.strip()) for r in image_score.split(",") if r.strip()] or ["max"]
    # a config without image_score means max (EvalConfig.enroll_kwargs), so max stays out
    # of the config and the caches of runs made before scores existed stay valid
    configs = [EvalConfig(estimator=e.strip(), model=model, backend=backend, augment=augment,
                          localisation=localisation, seed=seed,
                          enroll_options={} if r == "max" else {"image_score": r})
               for e in estimator.split(",") if e.strip() for r in rules]
    doc = evaluate(data, outdir, configs, _ints(shots, "--shots"), rounds, list(category) or None,
                   seed=seed, support_dir=support_sets, progress=not quiet,
                   max_map_bytes=max_map_memory * 1e9, targets=targets,
                   max_profile_bytes=max_profile_memory * 1e9, recalibrate=recalibrate,
                   make_inspector=lambda cfg: make_inspector(cfg.model, cfg.backend))
    doc["command"] = {"model": model, "backend": backend, "estimators": estimator,
                      "localisation": localisation, "augment": augment, "image_score": image_score,
                      "target_fpr": targets, "recalibrate": recalibrate}
    paths = write_report(doc, outdir, data)
    click.echo(markdown_tables(summarise(doc["results"])))
    click.echo(f"wrote {paths['json']} and {paths['html']}")
