"""The inspection road on the encoder's own device, in torch (GPU road).

With the encoder on a GPU, preprocessing, feature assembly, distances, the anomaly
map and the image score run on that GPU too, so an image's tensors never go to the
host and back: the encoder's outputs are already torch tensors there. The road is
written in torch rather than as CUDA kernels in the C++ core because the same code
then runs on CPU torch, where every CI machine tests it against the compiled core
(tests/test_gpu_road.py), and on CUDA unchanged.

    device.py      which device the road runs on (runtime's device, CAREG_GPU_ROAD)
    preprocess.py  uint8 images -> resized, normalised NCHW on the device
    precision.py   full float32 matmuls while the road runs (no TF32)
    transfer.py    host arrays onto the device
    sample.py      affine resampling with the project's theta convention
    assemble.py    encoder outputs -> features [B, P, D]
    distances.py   Mahalanobis, PatchCore kNN (global / registered-local), Eq. 7
    maps.py        heatmap unwarp, Gaussian blur, image-score rules
    road.py        GpuRoad: a profile's tensors uploaded once; inspect -> verdicts

Semantics (border handling, blur taps, top-P% rounding, NaN/inf policy, error
messages) are the compiled core's (cpp/src/road_*.cpp); results agree with it within
the tolerance stated in tests/test_gpu_road.py. Importing this package does not
import torch; its modules other than device.py do.
"""
