"""ResNet trunks (stem + layer1..3, strides 4/8/16); layer4 and fc are never built.

`ResNetTrunk` uses torchvision's parameter names (conv1, bn1, layerN.M.convK,
layerN.M.downsample.{0,1}) so a torchvision ImageNet checkpoint loads by path.
`ResNet50V2Trunk` is the pre-activation ResNet-50 v2 (GluonCV / ONNX zoo) whose
stem + layer1..3 tensors ship in ../shared/data/weights (key names documented
in that folder's README).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Trunk(nn.Module):
    """Stem + three stages; `stage(k, x)` runs stage k alone so the encoder can
    warp (register) the features between stages."""

    name = "?"
    channels = (0, 0, 0)
    ignored_prefixes: tuple = ()

    def stage(self, k, x):
        raise NotImplementedError

    def stage_of(self, param_name: str) -> int:
        """Stage (0, 1, 2) a parameter belongs to; the stem counts as stage 0."""
        head = param_name.split(".")[0]
        return int(head[5:]) - 1 if head.startswith("layer") else 0

    def forward(self, x):
        f1 = self.stage(0, x)
        f2 = self.stage(1, f1)
        return f1, f2, self.stage(2, f2)


def _conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, base_width=64):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv."""
    expansion = 4

    def __init__(self, cin, planes, stride=1, base_width=64):
        super().__init__()
        width = planes * base_width // 64
        out = planes * self.expansion
        self.conv1, self.bn1 = _conv(cin, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, out, 1), nn.BatchNorm2d(out)
        self.downsample = _downsample(cin, out, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + idt)


def _downsample(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNetTrunk(Trunk):
    """torchvision resnet18 / wide_resnet50_2 up to layer3."""

    mean, std, scale = IMAGENET_MEAN, IMAGENET_STD, 1.0 / 255.0
    ignored_prefixes = ("layer4.", "fc.")  # present in torchvision files, never built

    def __init__(self, block, layers, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, chans = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256), layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride, base_width))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            chans.append(cin)
        self.channels = tuple(chans)

    def stage(self, k, x):
        if k == 0:
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return getattr(self, f"layer{k + 1}")(x)


class BottleneckV2(nn.Module):
    """Pre-activation bottleneck: BN-ReLU before each conv, the shortcut conv reads
    the pre-activated input, output is the plain sum (no final ReLU)."""

    def __init__(self, cin, c, stride, down):
        super().__init__()
        m = c // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, m, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(m), nn.Conv2d(m, m, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(m), nn.Conv2d(m, c, 1, bias=False)
        self.downsample = nn.Conv2d(cin, c, 1, stride, bias=False) if down else None

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        idt = x if self.downsample is None else self.downsample(pre)
        y = self.conv1(pre)
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return y + idt


class ResNet50V2Trunk(Trunk):
    name = "resnet50v2"
    mean, std, scale = IMAGENET_MEAN, IMAGENET_STD, 1.0 / 255.0
    ignored_prefixes = ("layer4.", "fc.", "bn_final.")
    channels = (256, 512, 1024)

    def __init__(self):
        super().__init__()
        self.bn_data = nn.BatchNorm2d(3)  # Gluon normalises the input once more
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cfg = [(64, 256, 3, 1), (256, 512, 4, 2), (512, 1024, 6, 2)]
        for i, (cin, c, n, st) in enumerate(cfg):
            blocks = [BottleneckV2(cin, c, st, True)] + [BottleneckV2(c, c, 1, False)
                                                          for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    def stage(self, k, x):
        if k == 0:
            x = self.conv1(self.bn_data(x))
            x = F.max_pool2d(F.relu(self.bn1(x)), 3, 2, 1)
        return getattr(self, f"layer{k + 1}")(x)


def resnet18():
    m = ResNetTrunk(BasicBlock, (2, 2, 2))
    m.name = "resnet18"
    return m


def wide_resnet50_2():
    m = ResNetTrunk(Bottleneck, (3, 4, 6), base_width=128)
    m.name = "wide_resnet50_2"
    return m
