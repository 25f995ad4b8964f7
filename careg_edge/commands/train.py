"""`careg-edge train`: CAReg registration training on normal images."""
from pathlib import Path

import click

_STN_MODES = ["rotation_scale", "affine", "rotation", "translation", "scale", "shear"]
# encoder.backbones.BACKBONES, spelled out so that `careg-edge --help` does not import
# torch; tests/test_cli.py holds the two equal.
_BACKBONES = ["resnet50v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
              "mobilenet_v2", "resnet18", "wide_resnet50_2"]


@click.command("train")
@click.argument("roots", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", default="runs/train", show_default=True, type=click.Path(path_type=Path),
              help="Output folder: last.ckpt (resumable) and train_log.jsonl.")
@click.option("--exclude", multiple=True, help="Leave this category out (repeatable).")
@click.option("--backbone", type=click.Choice(_BACKBONES), default="resnet50v2", show_default=True,
              help="CNN trunk (stem + three stages at strides 4/8/16).")
@click.option("--weights", default="default", show_default=True,
              help="Trunk init: 'default' (bundled ImageNet file), a .pth/.safetensors path, or 'none'.")
@click.option("--stn-mode", type=click.Choice(_STN_MODES), default="rotation_scale", show_default=True,
              help="Transform family each spatial transformer may learn (paper Table XI).")
@click.option("--image-size", default=224, show_default=True, help="Square input size (multiple of 16).")
@click.option("--k-shot", default=2, show_default=True, help="Support images per query.")
@click.option("--batch-size", default=4, show_default=True, help="Queries per step.")
@click.option("--epochs", default=1, show_default=True, help="Passes over the query images (ignored when --steps is set).")
@click.option("--steps", default=0, show_default=True, help="Fixed number of steps (overrides --epochs).")
@click.option("--lr", default=1e-4, show_default=True, help="SGD lr (momentum 0.9, cosine schedule).")
@click.option("--frozen-stages", default=0, show_default=True, type=click.IntRange(0, 3),
              help="Freeze stem+stage1 (1), +stage2 (2), whole trunk (3).")
@click.option("--train-bn", is_flag=True, help="Update the trunk's BN statistics (large batches only).")
@click.option("--max-rotation", default=30.0, show_default=True, help="Query augmentation, degrees.")
@click.option("--self-weight", default=1.0, show_default=True, type=float,
              help="Weight W of the self-registration loss: registered maps of the augmented query "
                   "vs the same query unaugmented (only an STN that undoes the augmentation lowers "
                   "it). Total = registration + W * self; 0 = registration loss only.")
@click.option("--theta-weight", default=1.0, show_default=True, type=float,
              help="Weight of the θ loss: each stage's cumulative θ on the augmented query vs the "
                   "inverse of the applied transform composed with θ of the plain query (the "
                   "supervision that makes the STNs register per image); 0 = off.")
@click.option("--theta-anneal", default=1.0, show_default=True, type=float,
              help="Share of --theta-weight left at the last step, cosine schedule (1 = constant).")
@click.option("--max-grad-norm", default=1.0, show_default=True, type=float,
              help="Clip the total gradient norm of a step to this (0 = no clipping).")
@click.option("--synthetic", default=0, show_default=True, type=int,
              help="Add the first N procedural normal categories (gear, pcb, plate, bottle, knurl, "
                   "bracket, washer), each a separate category 'synthetic/<name>'; with N > 0 ROOTS "
                   "may be empty.")
@click.option("--synthetic-images", default=200, show_default=True, type=int,
              help="Images per synthetic category.")
@click.option("--holdout", default=0, show_default=True,
              help="Normal images per category held out for the validation curve.")
@click.option("--eval-every", default=0, show_default=True,
              help="Steps between held-out evaluations: val_cosine, and val_slope/val_corr of the "
                   "stage-3 rotation vs a known applied rotation (-1 = undoes each image's rotation, "
                   "0 = one common transform).")
@click.option("--save-every", default=200, show_default=True, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.ckpt.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--threads", default=0, show_default=True, help="CPU threads (0 = torch default).")
@click.option("--seed", default=0, show_default=True, help="Seed for sampling, augmentation and head init.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(roots, out, exclude, backbone, weights, stn_mode, image_size, k_shot, batch_size, epochs,
            steps, lr, frozen_stages, train_bn, max_rotation, self_weight, theta_weight, theta_anneal,
            max_grad_norm, synthetic, synthetic_images, holdout, eval_every, save_every, resume,
            device, threads, seed, quiet):
    """Train the registration encoder on normal images of several categories.

    ROOTS are dataset folders in the MVTec AD layout; only CAT/train/good and
    CAT/validation/good are read (never test/). Each step pairs an augmented query
    with K_SHOT support images of the same category. ROOTS may be omitted when
    --synthetic N adds procedural categories.

    Example: careg-edge train ../shared/data/mpdd ../shared/data/magnetic_tile_defects
    --exclude metal_plate --backbone resnet50v2 --image-size 160 --frozen-stages 1
    --steps 600 -o runs/loo_metal_plate  (synthetic only: careg-edge train
    --synthetic 5 --holdout 4 --eval-every 50 --steps 600 -o runs/synth5)
    """
    from ..lab.train import TrainConfig, TrainingInterrupted, train

    cfg = TrainConfig(
        roots=[str(r) for r in roots], out=str(out), exclude=list(exclude), backbone=backbone,
        weights=None if weights.lower() == "none" else weights, stn_mode=stn_mode,
        image_size=image_size, k_shot=k_shot, batch_size=batch_size, epochs=epochs, steps=steps,
        lr=lr, frozen_stages=frozen_stages, freeze_bn=not train_bn, max_rotation=max_rotation,
        self_weight=self_weight, theta_weight=theta_weight, theta_anneal=theta_anneal,
        max_grad_norm=max_grad_norm, synthetic=synthetic, synthetic_images=synthetic_images,
        holdout=holdout, eval_every=eval_every, save_every=save_every, resume=resume,
        device=device, threads=threads, seed=seed, progress=not quiet)
    try:
        path = train(cfg)
    except TrainingInterrupted as e:
        kept = (f"checkpoint {e.checkpoint} holds them; continue with the same command and --resume"
                if e.checkpoint else "nothing to keep")
        click.echo(f"careg-edge: training interrupted after step {e.step} of {e.total}; {kept}", err=True)
        raise SystemExit(130)
    click.echo(f"checkpoint: {path}")
    click.echo(f"next: careg-edge eval --data DATA --model {path} -o runs/eval")
