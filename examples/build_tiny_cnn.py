"""Write examples/tiny_cnn.onnx: a small but real CNN with seeded random weights.

    input 1x3x32x32
    conv1 3x3 (16) + bn1 + relu1 -> pool1 (max 2x2)                        16x16x16
    dw 3x3 depthwise + bn2 + relu2 -> pw 1x1 (16) -> add (residual) -> relu3
    side 1x1 (8) + relu4 on pool1; concat [relu3, side]                     24x16x16
    conv3 3x3 stride 2 (32) + relu5 -> global average pool -> flatten -> fc (10)

Opset 13, IR version 8 (onnxruntime loads it). Run: python examples/build_tiny_cnn.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20240611
OPSET = 13
IR_VERSION = 8
INPUT_SHAPE = (1, 3, 32, 32)
CLASSES = 10


def build(seed: int = SEED) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []

    def weight(name: str, shape: tuple[int, ...], scale: float = 1.0) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        array = rng.standard_normal(shape) * scale / np.sqrt(fan_in)
        initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def batchnorm_params(prefix: str, channels: int) -> list[str]:
        params = {
            "scale": rng.uniform(0.5, 1.5, channels),
            "bias": rng.uniform(-0.2, 0.2, channels),
            "mean": rng.uniform(-0.2, 0.2, channels),
            "var": rng.uniform(0.5, 2.0, channels),
        }
        for key, array in params.items():
            initializers.append(numpy_helper.from_array(array.astype(np.float32), f"{prefix}.{key}"))
        return [f"{prefix}.{key}" for key in params]

    def conv(name: str, x: str, y: str, w: tuple[int, ...], **attrs: object) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, weight(f"{name}.w", w), weight(f"{name}.b", (w[0],), 0.1)], [y],
                                name=name, **attrs)

    nodes = [
        conv("conv1", "input", "conv1_out", (16, 3, 3, 3), pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv1_out", *batchnorm_params("bn1", 16)], ["bn1_out"], name="bn1"),
        helper.make_node("Relu", ["bn1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("MaxPool", ["relu1_out"], ["pool1_out"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        conv("dw", "pool1_out", "dw_out", (16, 1, 3, 3), pads=[1, 1, 1, 1], group=16),
        helper.make_node("BatchNormalization", ["dw_out", *batchnorm_params("bn2", 16)], ["bn2_out"], name="bn2"),
        helper.make_node("Relu", ["bn2_out"], ["relu2_out"], name="relu2"),
        conv("pw", "relu2_out", "pw_out", (16, 16, 1, 1)),
        helper.make_node("Add", ["pw_out", "pool1_out"], ["add_out"], name="add"),
        helper.make_node("Relu", ["add_out"], ["relu3_out"], name="relu3"),
        conv("side", "pool1_out", "side_out", (8, 16, 1, 1)),
        helper.make_node("Relu", ["side_out"], ["relu4_out"], name="relu4"),
        helper.make_node("Concat", ["relu3_out", "relu4_out"], ["cat_out"], name="concat", axis=1),
        conv("conv3", "cat_out", "conv3_out", (32, 24, 3, 3), pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv3_out"], ["relu5_out"], name="relu5"),
        helper.make_node("GlobalAveragePool", ["relu5_out"], ["gap_out"], name="gap"),
        helper.make_node("Flatten", ["gap_out"], ["flat_out"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat_out", weight("fc.w", (CLASSES, 32)), weight("fc.b", (CLASSES,), 0.1)],
                         ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [INPUT_SHAPE[0], CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="layerloom-examples")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("tiny_cnn.onnx")))
    args = parser.parse_args()
    onnx.save(build(), args.output)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
