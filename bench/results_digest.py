"""Keep an eval run's per-round numbers in the repo: OUTDIR/cache -> docs/archive/eval/NAME.json
(metrics, support sets, timings; no maps, no file lists) and its Markdown tables.

    python bench/results_digest.py runs/mpdd_r50 docs/archive/eval/mpdd_r50.json

Works on a run that is still going: only finished rounds are read.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_runs import rounds  # noqa: E402

from careg_edge.container import atomic_write_bytes  # noqa: E402
from careg_edge.lab.report import markdown_tables, summarise  # noqa: E402

KEEP = ("category", "method", "shots", "round", "support", "good_test_source", "image_auroc",
        "pixel_auroc", "aupro", "f1_max", "fpr_at_threshold", "detection_rate_at_threshold",
        "threshold", "enroll_s", "infer_ms", "n_test", "n_defective", "config")


def digest(outdir: Path) -> dict:
    rows = [{k: r.get(k) for k in KEEP} for by_r in rounds(outdir).values() for r in by_r.values()]
    rows.sort(key=lambda r: (r["category"], r["method"], r["shots"], r["round"]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"run": str(outdir), "written_at_commit": commit, "results": rows}


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    doc = digest(Path(argv[0]))
    out = Path(argv[1])
    atomic_write_bytes(out, (json.dumps(doc, indent=1) + "\n").encode())
    print(markdown_tables(summarise(doc["results"])))
    print(f"wrote {out} ({len(doc['results'])} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
