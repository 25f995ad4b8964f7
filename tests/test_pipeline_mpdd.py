"""Real data: MPDD metal_plate, K=8 PatchCore on the ImageNet resnet50v2 baseline
(identity STNs, no CAReg training) separates test/good from defective images.

Measured on this machine (seed 0, first 8 train/good as support, augment="none",
26 test/good + first 26 defective): image AUROC 0.999, 73 s on 2 busy cores.
The bound keeps a margin for numeric drift across BLAS/torch builds.
"""
import numpy as np
import pytest

BOUND = 0.95


@pytest.mark.slow
@pytest.mark.realdata
def test_metal_plate_patchcore_k8_auroc(metal_plate, resnet50v2_weights):
    pytest.importorskip("torch")
    from sklearn.metrics import roc_auc_score

    from careg_edge import Inspector
    insp = Inspector("imagenet:resnet50v2", threads=2)
    support = sorted((metal_plate / "train" / "good").glob("*.png"))[:8]
    prof = insp.enroll(support, estimator="patchcore", augment="none", seed=0,
                       max_units=2, synth_per_unit=2)
    good = sorted((metal_plate / "test" / "good").glob("*.png"))
    bad = sorted((metal_plate / "test" / "defect_type_unknown").glob("*.png"))[:26]
    rs = insp.inspect_batch(good + bad, prof)
    scores = np.array([r.score for r in rs])
    auroc = roc_auc_score([0] * len(good) + [1] * len(bad), scores)
    print(f"metal_plate K=8 PatchCore ImageNet resnet50v2 AUROC {auroc:.3f}")
    assert auroc >= BOUND
    assert all(r.anomaly_map.shape == (512, 512) for r in rs[:2])
