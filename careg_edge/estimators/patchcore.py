"""PatchCore (paper Algorithm 1): memory bank of 3x3-aggregated patch features,
greedy k-centre coreset, nearest-neighbour distance, re-weighted image score.

* Coreset: greedy k-centre on a seeded Gaussian random projection to 64 dims
  (Johnson-Lindenstrauss, as PatchCore does), size ceil(gamma * N) or `bank_size`.
  One pass over the rows per selected centre (compiled core): O(N * M * 64), which
  for K=8 x ~20 views (125k patches, 12.5k centres) is minutes on 2 cores. Registration aligns positions, so
  the grid is split into `regions` x `regions` blocks of cells and each block gets
  its own greedy coreset (its share of M): regions^2 times cheaper, and every patch
  still lies within the reported radius of a bank patch (the covering guarantee of
  k-centre holds per block, hence overall). regions=1 is the plain global coreset.
* Search (scored by the compiled road, cpp/src/road_score.cpp): "global" = every
  bank patch; "local" = registered local search: features are aligned by
  registration, so a query at grid cell p is compared only with bank patches whose
  own cell lies within +-radius rows and columns; a cell with no bank patch in that
  window falls back to the whole bank.
* Image score (PatchCore Eq. 7): s* = the largest patch distance, m* its nearest
  bank patch, N_b(m*) the b nearest bank patches of m*;
  score = (1 - softmax(|x* - m|, m in N_b(m*))[m*]) * s*  (PatchCore's own
  softmax of positive distances).
  Written with a softmax so that large distances do not overflow exp(). Used as the
  image score when the rule is "max".
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from .. import _core
from ..errors import UserInputError
from .base import Estimator, Fitted
from .padim import channel_subset

PROJ_DIM = 64


def greedy_coreset(x: np.ndarray, m: int, seed: int = 0, proj_dim: int = PROJ_DIM
                   ) -> Tuple[np.ndarray, float]:
    """Indices of a greedy k-centre coreset of `m` rows of x, and its covering radius
    (in the projected space: every row lies within `radius` of a selected row)."""
    n = x.shape[0]
    m = int(min(max(m, 1), n))
    rng = np.random.default_rng(seed)
    if x.shape[1] > proj_dim:
        r = rng.standard_normal((x.shape[1], proj_dim)).astype(np.float32) / np.sqrt(proj_dim)
        z = np.ascontiguousarray(x @ r, np.float32)
    else:
        z = np.ascontiguousarray(x, np.float32)
    idx, radius = _core.greedy_coreset(z, m, int(rng.integers(n)))   # the O(n m) loop
    return idx, float(radius)


def regional_coreset(x, pos, grid, m, regions, seed=0):
    """Greedy coreset per block of grid cells; each block gets m * (its share of rows)."""
    from concurrent.futures import ThreadPoolExecutor
    gh, gw = grid
    r = min(regions, gh, gw)
    block = (pos // gw) * r // gh * r + (pos % gw) * r // gw
    jobs = [(b, np.flatnonzero(block == b)) for b in range(r * r)]
    jobs = [(b, rows) for b, rows in jobs if rows.size]

    def one(job):
        b, rows = job
        idx, rad = greedy_coreset(x[rows], max(1, round(m * rows.size / len(x))), seed + b)
        return rows[idx], rad

    # blocks are independent and the core releases the GIL: one per core
    with ThreadPoolExecutor(max_workers=max(1, _core.default_threads())) as pool:
        done = list(pool.map(one, jobs))
    return np.sort(np.concatenate([d[0] for d in done])), max(d[1] for d in done)


class PatchCore(Estimator):
    name = "patchcore"
    grid_stride = 8
    aggregate = True
    profile_tensors = {"bank": ("<f4",), "bank_pos": ("<i4",)}   # F32 only, as the C reader
    gpu_kernel = "nearest_bank"

    @classmethod
    def check_shapes(cls, tensors, positions):
        bank, pos = tensors["bank"], tensors["bank_pos"]
        if bank.ndim != 2 or bank.shape[0] == 0 or pos.shape != (bank.shape[0],):
            return f"bank {bank.shape} / bank_pos {pos.shape}"
        if pos.size and (pos.min() < 0 or pos.max() >= positions):
            return "bank_pos outside the grid"
        return None

    @classmethod
    def scorer_args(cls, tensors, params):
        return {"tensors": {"bank": np.ascontiguousarray(tensors["bank"], np.float32),
                            "bank_pos": np.ascontiguousarray(tensors["bank_pos"], np.int32)},
                "search": str(params.get("search", "global")), "radius": int(params.get("radius", 2)),
                "reweight_k": int(params.get("reweight_k", 9))}

    def __init__(self, d: int = 256, gamma: float = 0.1, bank_size: int = None,
                 search: str = "global", radius: int = 2, reweight_k: int = 9,
                 regions: int = 4, **_):
        if search not in ("global", "local"):
            raise UserInputError(f"search: {search!r} is not 'global' or 'local'")
        if not (0 < gamma <= 1):
            raise UserInputError(f"gamma: coreset fraction must be in (0, 1], got {gamma}")
        super().__init__(d=d, gamma=gamma, bank_size=bank_size, search=search, radius=radius,
                         reweight_k=reweight_k, regions=regions)
        self.regions = max(1, int(regions))
        self.d, self.gamma, self.bank_size = d, gamma, bank_size
        self.search, self.radius, self.reweight_k = search, radius, reweight_k

    def input_transform(self, d_in, seed):
        return {"channel_index": channel_subset(d_in, self.d, seed)}

    def fit(self, feats, grid, groups, seed=0):
        n, p, d = feats.shape
        flat = feats.reshape(n * p, d)
        m = self.bank_size or math.ceil(self.gamma * n * p)
        idx, radius = regional_coreset(flat, np.tile(np.arange(p), n), grid, m, self.regions, seed)
        pos = (idx % p).astype(np.int32)
        return Fitted({"bank": np.ascontiguousarray(flat[idx]), "bank_pos": pos},
                      {"n_patches": int(n * p), "bank_size": int(len(idx)),
                       "coreset_radius": radius},
                      groups=np.repeat(groups, p)[idx])
