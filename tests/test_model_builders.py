"""The example model builders (examples/models): every network passes onnx.checker and
imports; small variants of each run through the reference executor as onnxruntime runs
them; the full-size networks have the published parameter and MAC counts, as layerloom's
own analysis counts them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from backends.reference import execute
from compiler import import_onnx
from compiler.analysis import LayerInfo, analyze, totals
from examples.models import MODELS, build

ROOT = Path(__file__).resolve().parent.parent

# Small variants: the same structure at a quarter of the channels and a small input.
SMALL = {
    "mobilenet_v1": (0.25, 128),  # the one the HLS issue uses
    "mobilenet_v2": (0.25, 64),
    "efficientnet_b0": (0.25, 64),
    "resnet50": (0.25, 64),
    "tiny_yolov3": (0.25, 128),
}

# Published figures: (parameters, MACs) at the default width and resolution.
# MobileNetV1 1.0-224: Howard et al. 2017, Table 8. MobileNetV2 1.0-224: Sandler et al.
# 2018, Table 4 (3.4 M; TF-slim's table 3.47 M). EfficientNet-B0: Tan and Le 2019,
# Table 2 (0.39 B "FLOPS" = multiply-adds). ResNet-50: torchvision (25.6 M, 4.09 GMACs).
# tiny-YOLOv3 at 416: darknet's yolov3-tiny.cfg, 5.56 BFLOPs = 2.78 G MACs.
PUBLISHED = {
    "mobilenet_v1": (4.2e6, 569e6),
    "mobilenet_v2": (3.47e6, 300e6),
    "efficientnet_b0": (5.3e6, 390e6),
    "resnet50": (25.6e6, 4.1e9),
    "tiny_yolov3": (8.9e6, 2.8e9),
}
# Exact trainable parameters (batch-norm running mean and variance excluded) as the
# reference implementations print them: Keras' MobileNet (alpha 1.0) and torchvision.
TRAINABLE = {"mobilenet_v1": 4_231_976, "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548, "resnet50": 25_557_032}
# Convolutions (dense, depthwise, squeeze-excite 1x1s and heads) per network.
CONVS = {"mobilenet_v1": 27, "mobilenet_v2": 52, "efficientnet_b0": 81, "resnet50": 53, "tiny_yolov3": 13}


def trainable(layers: list[LayerInfo]) -> int:
    """Parameters without batch norm's running mean and variance (2 of its 4 per channel)."""
    return totals(layers).params - sum(x.params for x in layers if x.op == "batchnorm") // 2


def ort_outputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x}), strict=True))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_variant_runs_as_onnxruntime_does(name: str) -> None:
    width, resolution = SMALL[name]
    model = build(name, width, resolution)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and model.opset_import[0].version == 13
    x = np.random.default_rng(7).standard_normal((1, 3, resolution, resolution)).astype(np.float32)
    theirs = ort_outputs(model, x)
    ours = execute(import_onnx(model), {"input": x})
    assert ours.keys() == theirs.keys()
    for key, expected in theirs.items():
        # Sane activations: the outputs are neither vanishing nor exploding.
        assert 0.01 < float(expected.std()) < 10, (key, expected.std())
        np.testing.assert_allclose(ours[key], expected, rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_counts_match_the_published_ones(name: str) -> None:
    model = build(name)
    layers = analyze(import_onnx(model))
    total = totals(layers)
    params, macs = PUBLISHED[name]
    assert total.params == pytest.approx(params, rel=0.03)
    assert total.macs == pytest.approx(macs, rel=0.03)
    if name in TRAINABLE:
        assert trainable(layers) == TRAINABLE[name]
    assert sum(x.op in ("conv2d", "depthwise") for x in layers) == CONVS[name]


def test_mobilenet_v1_width_and_resolution() -> None:
    """MobileNetV1-0.25-128: TF-slim's table gives 0.47 M parameters and 14 M MACs."""
    layers = analyze(import_onnx(build("mobilenet_v1", 0.25, 128)))
    assert trainable(layers) == pytest.approx(0.47e6, rel=0.01)
    assert totals(layers).macs == pytest.approx(14e6, rel=0.05)
    by_name = {x.name: x for x in layers}
    assert by_name["conv1"].output_shape == (1, 8, 64, 64)
    assert by_name["block13_pw"].output_shape == (1, 256, 4, 4)
    assert by_name["block2_dw"].op == "depthwise" and by_name["block2_dw"].output_shape == (1, 16, 32, 32)


def test_tiny_yolov3_layers_are_darknets() -> None:
    model = build("tiny_yolov3")
    nodes = {n.name: n for n in model.graph.node}
    pool11 = {a.name: list(a.ints) for a in nodes["pool11"].attribute}
    assert pool11 == {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [0, 0, 1, 1]}
    assert nodes["upsample19"].op_type == "Resize" and nodes["concat20"].input[1] == "conv8_leaky"
    assert [o.name for o in model.graph.output] == ["head1", "head2"]
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert shapes == [[1, 255, 13, 13], [1, 255, 26, 26]]
    leaky = [n for n in model.graph.node if n.op_type == "LeakyRelu"]
    assert len(leaky) == 11 and all(a.f == pytest.approx(0.1) for n in leaky for a in n.attribute)


def test_efficientnet_squeeze_excite_is_in_the_imported_graph() -> None:
    layers = {x.name: x for x in analyze(import_onnx(build("efficientnet_b0")))}
    assert layers["block2_se_pool"].op == "global_avgpool"
    assert layers["block2_se_scale"].op == "mul"
    # The gate is 1x1 spatially and broadcast over the block's feature map.
    assert layers["block2_se_scale"].input_shapes == ((1, 96, 56, 56), (1, 96, 1, 1))
    assert layers["block2_se_reduce"].weight_shape == (4, 96, 1, 1)  # a quarter of the block's input (16)


def test_builds_are_deterministic_and_seeded() -> None:
    a, b = build("resnet50", 0.25, 64), build("resnet50", 0.25, 64)
    assert a.SerializeToString() == b.SerializeToString()
    assert build("resnet50", 0.25, 64, seed=1).SerializeToString() != a.SerializeToString()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build("vgg")
    with pytest.raises(ValueError, match="multiple of 32"):
        build("mobilenet_v1", resolution=100)
    with pytest.raises(ValueError, match="width must be positive"):
        build("resnet50", width=0)
    assert set(MODELS) == set(PUBLISHED)


def test_cli_writes_the_model(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"

    def cli(resolution: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "examples.models", "mobilenet_v1", "--width", "0.25", "--resolution", resolution,
               "-o", str(out)]  # fmt: skip
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)

    done = cli("128")
    assert done.returncode == 0, done.stderr
    assert "84 layers, 0.48 M parameters, 14 M MACs" in done.stdout
    onnx.checker.check_model(onnx.load(out))
    bad = cli("100")
    assert bad.returncode == 2 and "multiple of 32" in bad.stderr
