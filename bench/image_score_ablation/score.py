"""Image-score / feature ablation on cached encoder maps (no augmentation)."""
import sys, numpy as np, faiss, cv2
from scipy.ndimage import gaussian_filter
from careg_edge.lab.datasets import draw_support
from careg_edge.lab.metrics import auroc
z = np.load(sys.argv[1]); cat = sys.argv[2]
names = list(z["train_names"]); y_all = z["y"]
SUB = np.sort(np.random.default_rng(1).choice(len(y_all), min(260, len(y_all)), replace=False))
y = y_all[SUB]
def up(f, g=28):
    f = f.astype(np.float32); b, c, h, w = f.shape
    if h == g: return f
    return np.stack([np.stack([cv2.resize(f[i, j], (g, g), interpolation=cv2.INTER_LINEAR) for j in range(c)]) for i in range(b)])
def agg(f):
    p = np.pad(f, ((0,0),(0,0),(1,1),(1,1)), mode="edge"); h, w = f.shape[2:]
    return sum(p[:, :, dy:dy+h, dx:dx+w] for dy in range(3) for dx in range(3)) / 9
_FC = {}
def feats(pre, combo, rng):
    if (pre, combo) in _FC: return _FC[(pre, combo)]
    parts = []
    sel = SUB if pre == "te" else slice(None)
    if "1" in combo: parts.append(up(z[pre+"1"][sel]))
    if "2" in combo: parts.append(up(z[pre+"2"][sel]))
    if "3" in combo: parts.append(up(z[pre+"3"][sel]))
    _FC[(pre, combo)] = np.concatenate(parts, 1)
    return _FC[(pre, combo)]
def self_dist(te, m, r=1):
    """Per patch: distance to its m-th nearest patch of the same image, patches within
    Chebyshev radius r excluded (a texture's normal patches recur in the image; a defect
    covering fewer than m patches does not)."""
    n, c, g, _ = te.shape
    yy, xx = np.divmod(np.arange(g * g), g)
    near = (np.abs(yy[:, None] - yy[None]) <= r) & (np.abs(xx[:, None] - xx[None]) <= r)
    out = np.empty((n, g * g), np.float32)
    for i in range(n):
        f = te[i].reshape(c, -1).T.astype(np.float32)
        sq = (f * f).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None] - 2 * f @ f.T, 0)
        d2[near] = np.inf
        out[i] = np.sqrt(np.partition(d2, m - 1, axis=1)[:, m - 1])
    return out.reshape(n, g, g)
def run(combo, sub, k, rnd, aggr=True, score="max", sigma=1.0, selfm=0, mix="min"):
    sup = draw_support(names, k, cat, rnd, 0)
    idx = [names.index(n) for n in sup]
    tr = feats("tr", combo, None)[idx]; te = feats("te", combo, None)
    d = tr.shape[1]
    if sub and sub < d:
        ci = np.sort(np.random.default_rng(0).choice(d, sub, replace=False)); tr, te = tr[:, ci], te[:, ci]
    if aggr: tr, te = agg(tr), agg(te)
    g = tr.shape[2]
    bank = np.ascontiguousarray(tr.transpose(0, 2, 3, 1).reshape(-1, tr.shape[1]), np.float32)
    q = np.ascontiguousarray(te.transpose(0, 2, 3, 1).reshape(-1, te.shape[1]), np.float32)
    ix = faiss.IndexFlatL2(bank.shape[1]); ix.add(bank)
    dist, _ = ix.search(q, 1); dist = np.sqrt(np.maximum(dist[:, 0], 0)).reshape(len(te), g, g)
    if selfm:
        sd = self_dist(te, selfm)
        dist = np.minimum(dist, sd) if mix == "min" else (sd if mix == "self" else np.sqrt(dist * sd))
    if sigma: dist = np.stack([gaussian_filter(m, sigma) for m in dist])
    flat = dist.reshape(len(te), -1)
    if score == "max": s = flat.max(1)
    elif score.startswith("top"): n = int(score[3:]); s = np.sort(flat, 1)[:, -n:].mean(1)
    elif score == "mean": s = flat.mean(1)
    elif score == "maxmean": s = flat.max(1) - flat.mean(1)
    elif score == "maxmed": s = flat.max(1) - np.median(flat, 1)
    elif score == "ratio": s = flat.max(1) / np.median(flat, 1)
    elif score == "multi":
        n = flat.shape[1]; srt = np.sort(flat, 1)
        out = {f"top{f}%": auroc(y, srt[:, -max(1, int(n * f / 100)):].mean(1)) for f in (1, 5, 20, 50, 100)}
        out["max"] = auroc(y, flat.max(1)); out["max+mean"] = auroc(y, flat.max(1) + flat.mean(1))
        types = z["types"][SUB]
        for t in sorted(set(types) - {"good"}):
            m = (types == t) | (types == "good")
            out[f"{t}:max"] = auroc(y[m], flat.max(1)[m]); out[f"{t}:mean"] = auroc(y[m], flat.mean(1)[m])
        return out
    return auroc(y, s)
combos = sys.argv[3].split(";") if len(sys.argv) > 3 else ["123:256", "23:0", "23:256", "2:0", "3:0", "12:0"]
for c in combos:
    combo, sub = c.split(":")[:2]
    extra = c.split(":")[2:] 
    kw = dict(e.split("=") for e in extra)
    kw2 = {}
    if "aggr" in kw: kw2["aggr"] = kw["aggr"] == "1"
    if "score" in kw: kw2["score"] = kw["score"]
    if "sigma" in kw: kw2["sigma"] = float(kw["sigma"])
    if "self" in kw: kw2["selfm"] = int(kw["self"])
    if "mix" in kw: kw2["mix"] = kw["mix"]
    if kw2.get("score") == "multi":
        for k in (2, 8):
            rs = [run(combo, int(sub), k, rnd, **kw2) for rnd in range(2)]
            print(c, "K", k, {n: round(float(np.mean([r[n] for r in rs])), 3) for n in rs[0]}, flush=True)
        continue
    r = {k: np.mean([run(combo, int(sub), k, rnd, **kw2) for rnd in range(2)]) for k in (2, 8)}
    print(f"{c:30s} K2 {r[2]:.3f}  K8 {r[8]:.3f}", flush=True)
