"""Encode a category's train/good + test images once with an ONNX encoder; cache fp16 maps."""
import sys, numpy as np, time
from pathlib import Path
from careg_edge import imageio, preprocess
from careg_edge.lab import datasets
from careg_edge.pipeline import open_runtime
model, root, cat, out = sys.argv[1:5]
size = int(sys.argv[5]) if len(sys.argv) > 5 else 224
rt = open_runtime(model, "onnxruntime", 2)
c = datasets.load_category(Path(root), cat)
def enc(paths):
    f1, f2, f3, shapes = [], [], [], []
    for s in range(0, len(paths), 8):
        ims = [imageio.read_image(p) for p in paths[s:s+8]]
        shapes += [im.shape[:2] for im in ims]
        x = preprocess.normalise([preprocess.resize(im, (size, size)) for im in ims], rt.meta)
        o = rt.infer(x)
        f = o["feat1"]; b, ch, h, w = f.shape
        f1.append(f.reshape(b, ch, h//2, 2, w//2, 2).mean((3, 5)).astype(np.float16))
        f2.append(o["feat2"].astype(np.float16)); f3.append(o["feat3"].astype(np.float16))
    return np.concatenate(f1), np.concatenate(f2), np.concatenate(f3), np.array(shapes)
t = time.time()
tr = enc(c.train); te = enc([t.path for t in c.test])
np.savez(out, tr1=tr[0], tr2=tr[1], tr3=tr[2], te1=te[0], te2=te[1], te3=te[2],
         y=np.array([t.label for t in c.test]), types=np.array([t.defect_type for t in c.test]),
         train_names=np.array([p.name for p in c.train]), te_shapes=te[3])
print("done", time.time() - t)
