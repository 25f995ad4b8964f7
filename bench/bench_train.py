"""CPU throughput of one CAReg training step per backbone (images/s).

One step = forward of B queries + B*k supports through trunk + STNs, the
registration head/loss, backward, SGD update: exactly lab.train.step_loss. Random
images (throughput does not depend on content); ImageNet init is irrelevant
here, so weights are random and no files are needed.

    python bench/bench_train.py                      # 224², all backbones
    python bench/bench_train.py --size 160 --frozen-stages 1 --backbones resnet50v2
"""
from __future__ import annotations

import argparse
import time

import torch

from careg_edge.lab.train import (TrainConfig, build, normaliser, set_train_mode, step_loss)

ALL = ["resnet18", "wide_resnet50_2", "resnet50v2", "efficientnet_lite0", "mobilenet_v2"]


def bench(name: str, args) -> dict:
    cfg = TrainConfig(roots=["-"], backbone=name, weights=None, image_size=args.size,
                      k_shot=args.k_shot, batch_size=args.batch, frozen_stages=args.frozen_stages)
    torch.manual_seed(0)
    enc, head = build(cfg)
    params = [p for p in list(enc.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    norm = normaliser(enc.trunk, "cpu")
    set_train_mode(enc, head, cfg)
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    s = torch.randint(0, 256, (args.batch, args.k_shot, 3, args.size, args.size), dtype=torch.uint8)
    times, cpu = [], []
    for i in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step_loss(enc, head, norm, q, s, cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    per_step = sorted(times)[len(times) // 2]  # median: robust to other jobs on the machine
    n_img = args.batch * (args.k_shot + 1)
    return {"backbone": name, "s_per_step": per_step, "images_per_s": n_img / per_step,
            "cpu_s_per_step": sorted(cpu)[len(cpu) // 2],
            "trainable_M": sum(p.numel() for p in params) / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=ALL, choices=ALL)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=2, help="queries per step")
    ap.add_argument("--k-shot", type=int, default=2)
    ap.add_argument("--frozen-stages", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# train step, {args.size}x{args.size}, {args.batch} queries x (1+{args.k_shot}) images, "
          f"frozen stages {args.frozen_stages}, {torch.get_num_threads()} threads, median of "
          f"{args.steps}")
    # cpu-s/step (process CPU time) does not grow when other jobs share the cores;
    # wall-clock images/s does. On an idle machine images/s ~ images*threads/cpu-s.
    print(f"{'backbone':<20}{'s/step':>9}{'images/s':>10}{'cpu-s/step':>12}{'trainable M':>13}")
    rows = []
    for n in args.backbones:
        r = bench(n, args)
        rows.append(r)
        print(f"{r['backbone']:<20}{r['s_per_step']:>9.2f}{r['images_per_s']:>10.2f}"
              f"{r['cpu_s_per_step']:>12.2f}{r['trainable_M']:>13.2f}", flush=True)
    fastest = max(r["images_per_s"] for r in rows)
    print("relative to the fastest: " + ", ".join(
        f"{r['backbone']} {r['images_per_s'] / fastest:.2f}" for r in rows))


if __name__ == "__main__":
    main()
