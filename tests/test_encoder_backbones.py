"""One contract over every backbone (timm habit): shapes, strides, channels,
preprocessing attributes, weight loading in the documented key layout, one-line
refusal of other architectures; real ImageNet weights when present."""
import numpy as np
import pytest
import torch

from careg_edge.encoder.backbones import (BACKBONES, create_backbone, default_weights_path,
                                          load_weights, read_state_dict)
from careg_edge.errors import CaregError, UserInputError

NAMES = sorted(BACKBONES)
CHANNELS = {"resnet18": (64, 128, 256), "wide_resnet50_2": (256, 512, 1024),
            "resnet50v2": (256, 512, 1024), "efficientnet_lite0": (24, 40, 112),
            "efficientnet_lite1": (24, 40, 112), "efficientnet_lite2": (24, 48, 120),
            "mobilenet_v2": (24, 32, 96)}
# keys that only exist in full ImageNet files; the trunk never builds these layers
EXTRA_KEYS = {"resnet18": "layer4.0.conv1.weight", "wide_resnet50_2": "fc.weight",
              "resnet50v2": "layer4.0.bn1.weight", "efficientnet_lite0": "_blocks.14._bn2.bias",
              "efficientnet_lite1": "_blocks.20._bn2.bias", "efficientnet_lite2": "_blocks.20._bn2.bias",
              "mobilenet_v2": "features.18.0.weight"}
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {n: create_backbone(n, weights=None).eval() for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_shapes_strides_channels(models, name):
    m = models[name]
    assert m.channels == CHANNELS[name] and m.name == name
    assert len(m.mean) == 3 and len(m.std) == 3 and 0 < m.scale <= 1
    with torch.no_grad():
        feats = m(torch.randn(2, 3, 64, 96))
    for f, c, s in zip(feats, CHANNELS[name], (4, 8, 16)):
        assert tuple(f.shape) == (2, c, 64 // s, 96 // s)
    # stage(k) chained by hand equals forward (the encoder relies on it)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f1 = m.stage(0, x)
        f3 = m.stage(2, m.stage(1, f1))
        ref = m(x)
    torch.testing.assert_close(f3, ref[2])
    assert all(m.stage_of(n) in (0, 1, 2) for n, _ in m.named_parameters())
    assert {m.stage_of(n) for n, _ in m.named_parameters()} == {0, 1, 2}


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("name", NAMES)
def test_loads_documented_key_layout(models, name, fmt, tmp_path):
    src = models[name]
    sd = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v.clone()
          for k, v in src.state_dict().items()}
    sd[EXTRA_KEYS[name]] = torch.zeros(3)  # full ImageNet files carry layers we never build
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save({"module." + k: v for k, v in sd.items()}, path)  # DataParallel prefix too
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    m = create_backbone(name, weights=path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_other_architecture_refused_in_one_line(models, name, tmp_path):
    other = models["mobilenet_v2" if name != "mobilenet_v2" else "resnet18"]
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(UserInputError) as e:
        create_backbone(name, weights=path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "missing" in msg and name in msg


def test_wrong_shape_and_unreadable_refused(tmp_path):
    m = create_backbone("resnet18", weights=None)
    sd = m.state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(UserInputError, match="wrong-shape keys .e.g. layer1.0.conv1.weight"):
        load_weights(m, tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserInputError, match="not a readable weights file"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(UserInputError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    with pytest.raises(UserInputError, match="unknown"):
        create_backbone("resnet152")


def test_torchvision_parameter_names():
    """Spot checks against torchvision's resnet18 / wide_resnet50_2 state-dict names
    and shapes (torchvision itself cannot be installed beside this torch)."""
    r18 = create_backbone("resnet18", weights=None).state_dict()
    assert tuple(r18["conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(r18["layer1.1.conv2.weight"].shape) == (64, 64, 3, 3)
    assert tuple(r18["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert "layer2.0.downsample.1.running_var" in r18
    assert "layer1.0.downsample.0.weight" not in r18
    # torchvision resnet18 has 122 state-dict entries: fc (2) + layer4 (2 blocks of 12, plus a
    # downsample of 6) are the ones never built here
    layer4_fc = 2 + 2 * 12 + 6
    assert len(r18) == 122 - layer4_fc
    wrn = create_backbone("wide_resnet50_2", weights=None).state_dict()
    assert tuple(wrn["layer1.0.conv1.weight"].shape) == (128, 64, 1, 1)
    assert tuple(wrn["layer1.0.conv3.weight"].shape) == (256, 128, 1, 1)
    assert tuple(wrn["layer3.0.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(wrn["layer3.5.conv3.weight"].shape) == (1024, 512, 1, 1)


def test_no_default_weights_for_torchvision_models():
    with pytest.raises(CaregError, match="resnet18-f37072fd.pth"):
        default_weights_path("resnet18")


# ---------------------------------------------------------------- real weights
def _real(name):
    try:
        return default_weights_path(name)
    except CaregError as e:
        pytest.skip(f"real {name} weights not available: {e}")


@pytest.mark.parametrize("name", ["resnet50v2", "mobilenet_v2"] + LITES)
def test_real_weights_load_strictly(name):
    path = _real(name)
    m = create_backbone(name, weights="default")
    sd = read_state_dict(path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k].to(v.dtype)), k


def _bn_input_stats(model, images):
    """Per-BN (running stats, observed per-channel mean/var of its input) in eval mode."""
    out = []

    def hook(mod, inp, _):
        x = inp[0].detach().double()
        out.append((mod, x.mean((0, 2, 3)), x.var((0, 2, 3))))

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return out


def _natural_images(meta_model, n=8, size=128):
    """Real photographs: the MPDD / magnetic-tile normal images under ../shared/data."""
    from careg_edge.imageio import read_image
    from careg_edge.preprocess import resize
    from conftest import shared_path
    files = sorted(shared_path("mpdd", "metal_plate", "train", "good").glob("*.png"))[:n // 2]
    files += sorted(shared_path("magnetic_tile_defects", "magnetic_tile", "train", "good")
                    .glob("*.jpg"))[:n // 2]
    x = np.stack([resize(read_image(f), (size, size)) for f in files]).astype(np.float32)
    x = (x * meta_model.scale - np.array(meta_model.mean)) / np.array(meta_model.std)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


@pytest.mark.parametrize("name", ["resnet50v2", "mobilenet_v2"] + LITES)
def test_real_weights_match_bn_running_statistics(name):
    """A coherent trained network sees, at each BN, inputs whose per-channel means
    correlate with that BN's running mean; shuffling conv input channels (a wiring
    error) destroys that. Median over the BNs after the stem."""
    _real(name)
    m = create_backbone(name, weights="default").eval()
    x = _natural_images(m, n=6, size=96)
    stats = _bn_input_stats(m, x)[2:]  # skip bn_data/stem: inputs are normalised pixels
    corr = [np.corrcoef(mod.running_mean.double().numpy(), mu.numpy())[0, 1] for mod, mu, _ in stats]
    assert np.median(corr) > 0.7, np.median(corr)

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # control: same tensors, scrambled wiring
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d) and mod.groups == 1 and mod.in_channels > 3:
                mod.weight.copy_(mod.weight[:, torch.randperm(mod.in_channels, generator=g)])
    stats_c = _bn_input_stats(m, x)[2:]
    corr_c = [np.corrcoef(mod.running_mean.double().numpy(), mu.numpy())[0, 1]
              for mod, mu, _ in stats_c]
    assert np.median(corr) > np.median(corr_c) + 0.2, (np.median(corr), np.median(corr_c))


def _file_stages(sd):
    """(repeats, kernel, expand, cout) per stage read from a lukemelas EfficientNet state
    dict's shapes alone; a stage is a run of blocks with one output width."""
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    stages = []
    for i in range(n):
        dw = sd[f"_blocks.{i}._depthwise_conv.weight"].shape  # [mid, 1, k, k]
        cout = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
        cin = sd[f"_blocks.{i}._expand_conv.weight"].shape[1] if f"_blocks.{i}._expand_conv.weight" in sd else dw[0]
        if stages and stages[-1][3] == cout:
            stages[-1][0] += 1
        else:
            stages.append([1, dw[2], dw[0] // cin, cout])
    return [tuple(s) for s in stages]


@pytest.mark.parametrize("name", LITES)
def test_lite_scaling_matches_the_registry_files(name):
    """The scaling table (round_filters width, ceil depth, first/last stage fixed) gives
    every stage of the published file, including the ones the trunk never builds."""
    from careg_edge.encoder.mobile import LITE_VARIANTS, lite_stages
    sd = read_state_dict(_real(name))
    width, depth, _ = LITE_VARIANTS[name]
    assert _file_stages(sd) == [(n, k, e, c) for n, k, _, e, c in lite_stages(width, depth)]
    assert tuple(sd["_conv_stem.weight"].shape) == (32, 3, 3, 3)
    assert sd["_conv_head.weight"].shape[:2] == (1280, lite_stages(width, depth)[-1][4])


def test_lite_scaling_published_widths():
    """EfficientNet-Lite2 (width 1.1): 16, 24, 48, 88, 120, 208, 352 channels; Lite1/Lite0
    keep the base widths; repeats 1,3,3,4,4,5,1 for both Lite1 (depth 1.1) and Lite2 (1.2)."""
    from careg_edge.encoder.mobile import lite_stages
    assert [s[4] for s in lite_stages(1.1, 1.2)] == [16, 24, 48, 88, 120, 208, 352]
    assert [s[4] for s in lite_stages(1.0, 1.1)] == [16, 24, 40, 80, 112, 192, 320]
    assert [s[0] for s in lite_stages(1.1, 1.2)] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[0] for s in lite_stages(1.0, 1.0)] == [1, 2, 2, 3, 3, 4, 1]


def test_lite0_outputs_unchanged():
    """Per-tap statistics of the real Lite0 trunk on a fixed input, recorded from the
    Lite0-only implementation before the trunk was generalised to Lite1/2."""
    _real("efficientnet_lite0")
    m = create_backbone("efficientnet_lite0").eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = m(x)
    ref = [((2, 24, 56, 56), -0.17089200582755487, 10.456348677316202,
            [-11.29773998260498, 10.168045997619629, 7.234625339508057, 18.2957763671875]),
           ((2, 40, 28, 28), -1.6751566390722825, 6.504667912820878,
            [-2.869915723800659, 9.609935760498047, 7.589662551879883, 0.9741591811180115]),
           ((2, 112, 14, 14), -0.4990197691394773, 3.18491369149096,
            [-0.5932786464691162, -3.834390878677368, -2.722418785095215, -2.6928019523620605])]
    for f, (shape, mean, absmean, first) in zip(feats, ref):
        assert tuple(f.shape) == shape
        assert float(f.double().mean()) == pytest.approx(mean, abs=1e-4)
        assert float(f.double().abs().mean()) == pytest.approx(absmean, rel=1e-5)
        np.testing.assert_allclose(f.flatten()[:4].numpy(), first, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- weights search
def test_weights_search_order_env_then_user_folder(tmp_path, monkeypatch):
    env, data = tmp_path / "env", tmp_path / "data"
    user = data / "careg-edge" / "weights"
    for folder in (env, user):
        folder.mkdir(parents=True)
    monkeypatch.setenv("CAREG_WEIGHTS_DIR", str(env))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    with pytest.raises(CaregError, match=r"no resnet18-f37072fd\.pth in .*env or .*weights"):
        default_weights_path("resnet18")
    (user / "resnet18-f37072fd.pth").write_bytes(b"")
    assert default_weights_path("resnet18") == user / "resnet18-f37072fd.pth"
    (env / "resnet18-f37072fd.pth").write_bytes(b"")
    assert default_weights_path("resnet18") == env / "resnet18-f37072fd.pth"
    monkeypatch.delenv("CAREG_WEIGHTS_DIR")
    assert default_weights_path("resnet18") == user / "resnet18-f37072fd.pth"


def test_explicit_weights_file_wins_over_the_search(tmp_path, monkeypatch):
    monkeypatch.setenv("CAREG_WEIGHTS_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "nor-here"))
    sd = create_backbone("resnet18", weights=None).state_dict()
    torch.save(sd, tmp_path / "mine.pth")
    m = create_backbone("resnet18", weights=tmp_path / "mine.pth")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in sd.items())
