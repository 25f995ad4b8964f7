"""ONNX Runtime backend and load_runtime without torch: a hand-built ONNX (onnx.helper)
stands in for the encoder, so the expected outputs are known in closed form."""
import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from careg_edge.errors import UserInputError, WrongKind  # noqa: E402
from careg_edge.runtime import load_runtime  # noqa: E402
from careg_edge.encoder_meta import EncoderMeta  # noqa: E402
from careg_edge.runtime.base import OUTPUT_NAMES  # noqa: E402
from careg_edge.runtime.onnxruntime_backend import META_KEY, OnnxRuntime, read_meta  # noqa: E402

H = W = 32
META = EncoderMeta(encoder_hash="ab" * 32, backbone="toy", input_size=(H, W),
                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=(3, 3, 3))


def toy_onnx(path, with_meta=True):
    """feat_k = AveragePool(image, 4·2^k); theta = 2·ones, theta_inv = 3·ones (per batch)."""
    nodes, outs = [], []
    for k, s in enumerate((4, 8, 16)):
        nodes.append(helper.make_node("AveragePool", ["image"], [f"feat{k + 1}"],
                                      kernel_shape=[s, s], strides=[s, s]))
        outs.append(helper.make_tensor_value_info(f"feat{k + 1}", TensorProto.FLOAT,
                                                  ["batch", 3, H // s, W // s]))
    # theta: ReduceMean over C,H,W gives [B,1,1,1]; *0 + const broadcasts to [B,3,2,3]
    nodes.append(helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=1))
    for name, val in (("theta", 2.0), ("theta_inv", 3.0)):
        c = helper.make_tensor(f"{name}_c", TensorProto.FLOAT, [1, 3, 2, 3], [val] * 18)
        nodes += [helper.make_node("Constant", [], [f"{name}_k"], value=c),
                  helper.make_node("Mul", ["m", "zero"], [f"{name}_z"]),
                  helper.make_node("Add", [f"{name}_z", f"{name}_k"], [name])]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 3, 2, 3]))
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["batch", 3, H, W])], outs, initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if with_meta:
        model.metadata_props.add(key=META_KEY, value=json.dumps(META.to_dict()))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def toy(tmp_path):
    return toy_onnx(tmp_path / "toy.onnx")


def test_infer_matches_numpy(toy):
    rt = OnnxRuntime(toy, threads=1)
    x = np.random.default_rng(0).standard_normal((4, 3, H, W)).astype(np.float32)
    out = rt.infer(x)
    assert list(out) == list(OUTPUT_NAMES)
    for k, s in enumerate((4, 8, 16)):
        ref = x.reshape(4, 3, H // s, s, W // s, s).mean((3, 5))
        np.testing.assert_allclose(out[f"feat{k + 1}"], ref, atol=1e-5)
    np.testing.assert_array_equal(out["theta"], np.full((4, 3, 2, 3), 2.0, np.float32))
    np.testing.assert_array_equal(out["theta_inv"], np.full((4, 3, 2, 3), 3.0, np.float32))


def test_meta_round_trip(toy):
    assert OnnxRuntime(toy).meta == META
    assert read_meta(toy) == META


def test_onnx_without_metadata_refused(tmp_path):
    p = toy_onnx(tmp_path / "foreign.onnx", with_meta=False)
    with pytest.raises(WrongKind, match="no careg-edge metadata"):
        OnnxRuntime(p)
    with pytest.raises(WrongKind, match="careg-edge export"):
        read_meta(p)


def test_wrong_input_shape_is_one_line_error(toy):
    rt = OnnxRuntime(toy)
    with pytest.raises(UserInputError, match=r"\[B, 3, 32, 32\]"):
        rt.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_load_runtime_auto_picks_ort_cpu_and_says_why(toy, capsys):
    rt = load_runtime(str(toy), threads=1)
    err = capsys.readouterr().err
    assert rt.name == "onnxruntime-cpu"
    assert err.count("\n") == 1 and "onnxruntime" in err and "CPU" in err
    load_runtime(str(toy), verbose=False)
    assert capsys.readouterr().err == ""


def test_load_runtime_rejects_bad_backend(toy):
    with pytest.raises(UserInputError, match="choose one of"):
        load_runtime(str(toy), backend="tpu")
    with pytest.raises(UserInputError, match="needs an .onnx"):
        load_runtime("model.ckpt", backend="onnxruntime", verbose=False)


def test_onnxruntime_path_never_imports_torch(toy):
    code = ("import sys, numpy as np\n"
            "from careg_edge.runtime import load_runtime\n"
            f"rt = load_runtime({str(toy)!r}, verbose=False)\n"
            "rt.infer(np.zeros((1, 3, 32, 32), np.float32))\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
