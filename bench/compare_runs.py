"""Paired comparison of two `careg-edge eval` output folders (same support sets):
baseline vs a new encoder / setting, per method and K, Δ paired per round.

    python bench/compare_runs.py --base runs/loo_metal_plate_flip_models \
        --new runs/loo_metal_plate_flip_loo_eff_metal_plate --metrics image_auroc,pixel_auroc

Reads OUTDIR/cache/**.careg-eval through careg_edge.lab.round_cache.load_round, so it also
works on a run that is still going (only finished rounds are used). Prints Markdown.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from careg_edge.lab.round_cache import load_round

NAME = re.compile(r"^(?P<method>.+)-[0-9a-f]{12}-K(?P<k>\d+)-r(?P<r>\d+)\.careg-eval$")


def rounds(outdir: Path) -> dict:
    """{(category, method, K): {round: result dict}} from a run's cache."""
    out = defaultdict(dict)
    for f in sorted(Path(outdir).glob("cache/*/*.careg-eval")):
        m = NAME.match(f.name)
        got = load_round(f) if m else None
        if got is None:
            continue
        res = got[0]
        out[(res["category"], res["method"], int(res["shots"]))][int(res["round"])] = res
    return out


def _ms(v) -> str:
    v = np.asarray(v, float) * 100
    if v.size == 0:
        return "–"
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    return f"{v.mean():.1f} ± {sd:.1f}"


def table(base: dict, new: dict, metric: str, base_name: str, new_name: str) -> str:
    lines = [f"\n**{metric}** (%, mean ± sample std over rounds; Δ paired per round)\n",
             f"| category | method | K | n | {base_name} | {new_name} | Δ |", "|---|---|---|---|---|---|---|"]
    for key in sorted(set(base) & set(new)):
        common = sorted(set(base[key]) & set(new[key]))
        if not common:
            continue
        b = [base[key][r][metric] for r in common]
        n = [new[key][r][metric] for r in common]
        d = np.subtract(n, b)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(common)} | {_ms(b)} | {_ms(n)} | "
                     f"{'+' if d.mean() >= 0 else ''}{_ms(d)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--base-name", default="baseline")
    ap.add_argument("--new-name", default="new")
    ap.add_argument("--metrics", default="image_auroc,pixel_auroc,aupro")
    a = ap.parse_args(argv)
    base, new = rounds(a.base), rounds(a.new)
    for metric in a.metrics.split(","):
        print(table(base, new, metric.strip(), a.base_name, a.new_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
