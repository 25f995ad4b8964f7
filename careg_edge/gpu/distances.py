"""Distances on the device: the core's estimators (cpp/src/road_score.cpp,
mahalanobis.cpp, knn*.cpp) in torch.

PaDiM / OrthoAD: sqrt(|L^T (x - mu)|^2) per position, L the profile's packed
lower-triangular precision factor, unpacked once to [P, D, D] float32 (fp16 factors
are widened first, as the core does).
PatchCore: the nearest bank row per position -- the whole bank (global) or the bank
rows enrolled within +-radius grid cells (registered-local), with the whole bank for
cells whose window holds no usable row. Distances come from |q|^2 + |m|^2 - 2 q.m
in chunks; the few best candidates are recomputed exactly (the norm trick loses
digits when q is close to m). Non-finite bank rows never win.
Eq. 7: (1 - softmax(|x* - m|, m in N_b(m*))[m*]) * s*, in float64.

KERNELS: the GPU road's kernels by the name an estimator's class gives as
`gpu_kernel`. A kernel holds one profile's state on the device, gives distances
[B, P] (plus what its image score needs) and, where the estimator has its own image
score for a rule, that score; otherwise the road scores the map by the rule.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

CHUNK_ELEMENTS = 1 << 25     # one query x bank block: 128 MB of float32
CANDIDATES = 4               # norm-trick winners recomputed exactly


def unpack_factor(factor: np.ndarray, dim: int, device) -> torch.Tensor:
    """Packed row-major lower triangle [P, D(D+1)/2] -> dense L [P, D, D] float32."""
    f = torch.from_numpy(np.ascontiguousarray(factor)).to(device).float()
    rows, cols = torch.tril_indices(dim, dim, device=device)   # row-major, as packed
    L = torch.zeros((f.shape[0], dim, dim), dtype=torch.float32, device=device)
    L[:, rows, cols] = f
    return L


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """x [B, P, D], mean [P, D], L [P, D, D] -> [B, P]; NaN anywhere in a position's
    inputs gives NaN there."""
    diff = (x - mean).transpose(0, 1)                 # [P, B, D]
    z = torch.bmm(diff, L)                            # z_j = sum_i d_i L[i, j] = (L^T d)_j
    return z.square().sum(-1).sqrt().transpose(0, 1)


class Bank:
    """PatchCore's memory bank on the device, ready for nearest-row searches."""

    def __init__(self, bank: np.ndarray, bank_pos: np.ndarray, grid: Tuple[int, int],
                 radius: Optional[int], device):
        b = torch.from_numpy(np.ascontiguousarray(bank, np.float32)).to(device)
        self.finite = torch.isfinite(b).all(1)
        self.rows = torch.where(self.finite[:, None], b, torch.zeros((), device=device))
        inf = torch.tensor(float("inf"), device=device)
        self.norms = torch.where(self.finite, self.rows.square().sum(1), inf)
        self.M = self.rows.shape[0]
        self.window = None if radius is None else self._window(bank_pos, grid, radius, device)

    @staticmethod
    def _window(bank_pos, grid, radius, device) -> torch.Tensor:
        """[P, M] bool: bank row m is within +-radius rows and cols of position p."""
        gh, gw = grid
        pos = torch.from_numpy(np.asarray(bank_pos, np.int64)).to(device)
        p = torch.arange(gh * gw, device=device)
        return ((p[:, None] // gw - pos[None] // gw).abs() <= radius) & \
               ((p[:, None] % gw - pos[None] % gw).abs() <= radius)

    def exact(self, q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Exact squared distances q [N, D] to rows idx [N, k] (inf for non-finite rows)."""
        d = (q[:, None, :] - self.rows[idx]).square().sum(-1)
        return torch.where(self.finite[idx], d, torch.full_like(d, float("inf")))

    def nearest(self, q: torch.Tensor, allowed: Optional[torch.Tensor] = None):
        """q [N, D] -> (sqdist [N], idx [N] int64, -1 where no usable row); `allowed`
        [N, M] bool restricts the candidates. Ties go to the lower bank index."""
        approx = (q.square().sum(1, keepdim=True) + self.norms[None]
                  - 2.0 * q @ self.rows.T).clamp_min_(0.0)
        if allowed is not None:
            approx = approx.masked_fill_(~allowed, float("inf"))
        k = min(CANDIDATES, self.M)
        cand = approx.topk(k, dim=1, largest=False).indices
        d = self.exact(q, cand)
        if allowed is not None:
            d = torch.where(allowed.gather(1, cand), d, torch.full_like(d, float("inf")))
        best = d.min(1, keepdim=True).values
        idx = torch.where(d == best, cand, torch.full_like(cand, self.M)).min(1).values
        idx = torch.where(torch.isfinite(best[:, 0]), idx, torch.full_like(idx, -1))
        return best[:, 0], idx

    def search(self, x: torch.Tensor, local: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """x [B, P, D] -> (distances [B, P] = sqrt(sqdist), nearest rows [B, P])."""
        B, P, D = x.shape
        q = x.reshape(B * P, D)
        dist = torch.empty(B * P, dtype=torch.float32, device=x.device)
        nn = torch.empty(B * P, dtype=torch.int64, device=x.device)
        step = max(1, CHUNK_ELEMENTS // max(1, self.M))
        for s in range(0, B * P, step):
            qs = q[s:s + step]
            allowed = None
            if local:
                allowed = self.window[torch.arange(s, s + len(qs), device=x.device) % P]
            d, i = self.nearest(qs, allowed)
            if local:   # windows without a usable row: the whole bank
                miss = i < 0
                if bool(miss.any()):
                    d[miss], i[miss] = self.nearest(qs[miss])
            dist[s:s + len(qs)], nn[s:s + len(qs)] = d, i
        return dist.sqrt().reshape(B, P), nn.reshape(B, P)

    def neighbours(self, m: torch.Tensor, k: int) -> torch.Tensor:
        """The k nearest bank rows of rows m [B] (m itself first), ties to the lower
        index; -1 where fewer than k usable rows exist."""
        ms = self.rows[m]
        approx = (self.norms[m][:, None] + self.norms[None] - 2.0 * ms @ self.rows.T).clamp_min_(0.0)
        approx = torch.where(self.finite[None], approx, torch.full_like(approx, float("inf")))
        cand = approx.topk(min(self.M, k + CANDIDATES), dim=1, largest=False).indices
        d = self.exact(ms, cand)
        # stable order by (exact distance, index): sort by index, then stably by distance
        cand, order = cand.sort(1)
        d = d.gather(1, order)
        d, order = d.sort(dim=1, stable=True)
        cand = cand.gather(1, order)[:, :k]
        return torch.where(torch.isfinite(d[:, :k]), cand, torch.full_like(cand, -1))


def reweighted(x: torch.Tensor, dist: torch.Tensor, nn: torch.Tensor, bank: Bank,
               k: int) -> torch.Tensor:
    """PatchCore Eq. 7 image scores [B] float64 (NaN when any distance is NaN, the
    largest is not finite, or it has no bank row)."""
    B = x.shape[0]
    b = torch.arange(B, device=x.device)
    worst = dist.argmax(1)               # first maximum, as the core's strict >
    s = dist[b, worst]
    m = nn[b, worst]
    bad = torch.isnan(dist).any(1) | ~torch.isfinite(s) | (m < 0)
    m = m.clamp_min(0)
    xs = x[b, worst].double()
    nb = bank.neighbours(m, min(k, bank.M))                       # [B, k]
    l0 = (xs - bank.rows[m].double()).norm(dim=1, keepdim=True)
    lj = (xs[:, None] - bank.rows[nb[:, 1:].clamp_min(0)].double()).norm(dim=2)
    lj = torch.where(nb[:, 1:] >= 0, lj, torch.full_like(lj, float("nan")))
    logits = torch.cat([l0, lj], dim=1)
    top = logits.max(1, keepdim=True).values
    e = (logits - top).exp()
    w = 1.0 - e[:, 0] / e.sum(1)
    out = w * s.double()
    return torch.where(bad, torch.full_like(out, float("nan")), out)


class Gaussian:
    """PaDiM / OrthoAD: mean and precision factor on the device, Mahalanobis distances."""

    def __init__(self, tensors: Dict[str, np.ndarray], grid: Tuple[int, int], params: dict, device):
        self.mean = torch.from_numpy(np.ascontiguousarray(tensors["mean"], np.float32)).to(device)
        self.dim = self.mean.shape[1]
        self.factor = unpack_factor(tensors["precision_factor"], self.dim, device)

    def distances(self, x: torch.Tensor):
        return mahalanobis(x, self.mean, self.factor), None

    def image_scores(self, x, dist, found, rule: str) -> Optional[torch.Tensor]:
        return None   # the map rule


class NearestBank:
    """PatchCore: the bank (global or registered-local search); Eq. 7 under "max"."""

    def __init__(self, tensors: Dict[str, np.ndarray], grid: Tuple[int, int], params: dict, device):
        self.local = str(params.get("search", "global")) == "local"
        self.reweight_k = int(params.get("reweight_k", 9))
        self.bank = Bank(tensors["bank"], tensors["bank_pos"], grid,
                         int(params.get("radius", 2)) if self.local else None, device)
        self.dim = self.bank.rows.shape[1]

    def distances(self, x: torch.Tensor):
        return self.bank.search(x, self.local)

    def image_scores(self, x, dist, nn, rule: str) -> Optional[torch.Tensor]:
        return reweighted(x, dist, nn, self.bank, self.reweight_k) if rule == "max" else None


KERNELS = {"mahalanobis": Gaussian, "nearest_bank": NearestBank}
