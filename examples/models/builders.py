"""Builders of five well-known CNNs as ONNX models (onnx.helper, opset 13, IR version 8)
with seeded random weights: MobileNetV1, MobileNetV2, EfficientNet-B0, ResNet-50 and
tiny-YOLOv3. The architectures follow the published networks layer for layer, so their
parameter and MAC counts are the published ones; the weights are random (He-initialised,
with batch-norm statistics near the identity, so activations keep a sane scale through
the depth of the network and float comparisons stay meaningful).

Every builder takes `width` (channel multiplier) and `resolution` (input side): the
defaults give the published network; small values give cheap variants with the same
structure (tests run MobileNetV1-0.25-128 and 0.25-width variants of the others).

    from examples.models import build
    model = build("mobilenet_v1", width=0.25, resolution=128)

Node names are stable and readable (`conv1`, `block2_dw`, `res3a_branch2b`, `conv13`):
they are the layer names layerloom's reports print. The graph input is `input`
(1 x 3 x R x R); classifiers output `output` (1 x 1000 logits), tiny-YOLOv3 outputs its
two raw detection heads `head1` (stride 32) and `head2` (stride 16).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
SEED = 20240611
CLASSES = 1000
# Batch-norm scale range of the last layer of a residual branch: small, so that the sum
# of 16 blocks' branches does not grow the feature maps' scale block after block.
RESIDUAL_GAMMA = (0.2, 0.4)


@dataclass
class Graph:
    """Nodes and initializers of a model under construction. Every method adds one or a
    few nodes and returns the name of the output tensor, which is the node's name."""

    seed: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    channels: dict[str, int] = field(default_factory=dict)  # tensor -> channel count

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def input(self, name: str, channels: int) -> str:
        self.channels[name] = channels
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], name: str, channels: int, output: str | None = None,
             **attrs: object) -> str:  # fmt: skip
        """One node called `name`; its output tensor is `output`, by default `name` too."""
        output = output or name
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        self.channels[output] = channels
        return output

    # --- layers with weights ---------------------------------------------------------

    def conv(
        self, name: str, x: str, out: int, kernel: int, stride: int = 1, group: int = 1, bias: bool = False,
        pads: Sequence[int] | None = None, gain: float = 2.0, output: str | None = None,
    ) -> str:  # fmt: skip
        """A convolution with 'same' padding (kernel // 2 on each side) unless `pads` says
        otherwise. Weights ~ N(0, gain / fan_in): He's initialisation for gain 2 (a ReLU
        follows), LeCun's for gain 1 (a linear output)."""
        cin = self.channels[x]
        fan_in = cin // group * kernel * kernel
        w = self.rng.standard_normal((out, cin // group, kernel, kernel)) * math.sqrt(gain / fan_in)
        inputs = [x, self.constant(f"{name}.w", w)]
        if bias:
            inputs.append(self.constant(f"{name}.b", self.rng.uniform(-0.1, 0.1, out)))
        half = kernel // 2
        return self.node(
            "Conv", inputs, name, out, kernel_shape=[kernel, kernel], strides=[stride, stride],
            pads=list(pads) if pads is not None else [half] * 4, group=group, output=output,
        )  # fmt: skip

    def batchnorm(self, name: str, x: str, gamma: tuple[float, float] = (0.8, 1.2)) -> str:
        """Inference batch norm with statistics near the identity (and `gamma` drawn from
        the given range: residual branches use a small one so sums do not grow)."""
        c = self.channels[x]
        params = {
            "scale": self.rng.uniform(*gamma, c),
            "bias": self.rng.uniform(-0.1, 0.1, c),
            "mean": self.rng.uniform(-0.1, 0.1, c),
            "var": self.rng.uniform(0.8, 1.2, c),
        }
        names = [self.constant(f"{name}.{key}", value) for key, value in params.items()]
        return self.node("BatchNormalization", [x, *names], name, c, epsilon=1e-5)

    def gemm(self, name: str, x: str, out: int) -> str:
        cin = self.channels[x]
        w = self.constant(f"{name}.w", self.rng.standard_normal((out, cin)) / math.sqrt(cin))
        b = self.constant(f"{name}.b", self.rng.uniform(-0.1, 0.1, out))
        return self.node("Gemm", [x, w, b], name, out, transB=1)

    # --- activations and the rest ----------------------------------------------------

    def activation(self, kind: str, name: str, x: str) -> str:
        c = self.channels[x]
        if kind == "relu":
            return self.node("Relu", [x], name, c)
        if kind == "relu6":
            return self.node("Clip", [x, self.constant(f"{name}.min", np.float32(0)),
                                      self.constant(f"{name}.max", np.float32(6))], name, c)  # fmt: skip
        if kind == "leaky":
            return self.node("LeakyRelu", [x], name, c, alpha=0.1)
        if kind == "swish":  # x * sigmoid(x), as EfficientNet writes it
            return self.node("Mul", [x, self.node("Sigmoid", [x], f"{name}_sigmoid", c)], name, c)
        raise ValueError(f"unknown activation '{kind}'")

    def conv_bn(self, name: str, x: str, out: int, kernel: int, stride: int = 1, group: int = 1,
                act: str | None = "relu", **conv_args: object) -> str:  # fmt: skip
        """conv -> `name`_bn -> `name`_`act` (no activation for act=None)."""
        y = self.batchnorm(f"{name}_bn", self.conv(name, x, out, kernel, stride, group, **conv_args))  # type: ignore[arg-type]
        return self.activation(act, f"{name}_{act}", y) if act else y

    def add(self, name: str, a: str, b: str) -> str:
        return self.node("Add", [a, b], name, self.channels[a])

    def classifier(self, x: str) -> str:
        """Global average pool, flatten, fully connected to 1000 logits (`output`)."""
        pooled = self.node("GlobalAveragePool", [x], "pool", self.channels[x])
        flat = self.node("Flatten", [pooled], "flatten", self.channels[x], axis=1)
        return self.gemm("output", flat, CLASSES)

    def model(self, name: str, resolution: int, outputs: Sequence[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, resolution, resolution])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.initializers,
        )  # fmt: skip
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="layerloom-examples"
        )
        model.ir_version = IR_VERSION
        # Fill in the outputs' shapes (they depend on width and resolution).
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        return model


def scaled(channels: int, width: float) -> int:
    """Channels under a width multiplier, as Keras' MobileNet does (at least 1)."""
    return max(1, int(channels * width))


def divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor`, never more than 10% down (MobileNetV2's and
    EfficientNet's `_make_divisible` / `round_filters`)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def check_resolution(name: str, resolution: int, multiple: int = 32) -> None:
    if resolution < multiple or resolution % multiple:
        raise ValueError(f"{name}: resolution must be a positive multiple of {multiple}, got {resolution}")


# ---------------------------------------------------------------------------------------
# MobileNetV1 (Howard et al. 2017): 13 depthwise-separable blocks
# ---------------------------------------------------------------------------------------

# (output channels, stride) of the pointwise conv of blocks 1..13.
MOBILENET_V1_BLOCKS = (
    [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
)


def mobilenet_v1(width: float = 1.0, resolution: int = 224, seed: int = SEED) -> onnx.ModelProto:
    """conv1 (3x3 s2, 32) then blocks `blockN_dw` (3x3 depthwise) + `blockN_pw` (1x1),
    each with batch norm and ReLU6, then average pool and a 1000-way classifier."""
    check_resolution("mobilenet_v1", resolution)
    g = Graph(seed)
    x = g.conv_bn("conv1", g.input("input", 3), scaled(32, width), 3, stride=2, act="relu6")
    for i, (out, stride) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        c = g.channels[x]
        x = g.conv_bn(f"block{i}_dw", x, c, 3, stride=stride, group=c, act="relu6")
        x = g.conv_bn(f"block{i}_pw", x, scaled(out, width), 1, act="relu6")
    return g.model(f"mobilenet_v1_{width:g}_{resolution}", resolution, [g.classifier(x)])


# ---------------------------------------------------------------------------------------
# MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks
# ---------------------------------------------------------------------------------------

# (expansion t, output channels c, repeats n, first stride s), the paper's Table 2.
MOBILENET_V2_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def inverted_residual(
    g: Graph, name: str, x: str, out: int, expand: int, kernel: int, stride: int, act: str,
    squeeze: int = 0,
) -> str:  # fmt: skip
    """MobileNetV2's / EfficientNet's block: `_expand` 1x1 (when expand > 1), `_dw`
    depthwise, optional squeeze-excite (`squeeze` channels), `_project` 1x1 without
    activation, and `_add` of the input when the shapes allow."""
    cin = g.channels[x]
    y = g.conv_bn(f"{name}_expand", x, cin * expand, 1, act=act) if expand > 1 else x
    y = g.conv_bn(f"{name}_dw", y, g.channels[y], kernel, stride=stride, group=g.channels[y], act=act)
    if squeeze:
        y = squeeze_excite(g, f"{name}_se", y, squeeze)
    residual = stride == 1 and cin == out
    y = g.batchnorm(f"{name}_project_bn", g.conv(f"{name}_project", y, out, 1, gain=1.0),
                    gamma=RESIDUAL_GAMMA if residual else (0.8, 1.2))  # fmt: skip
    return g.add(f"{name}_add", x, y) if residual else y


def mobilenet_v2(width: float = 1.0, resolution: int = 224, seed: int = SEED) -> onnx.ModelProto:
    """conv1 (3x3 s2) + 17 inverted-residual blocks `blockN_*` (ReLU6) + conv_last (1x1,
    1280) + classifier."""
    check_resolution("mobilenet_v2", resolution)
    g = Graph(seed)
    x = g.conv_bn("conv1", g.input("input", 3), divisible(32 * width), 3, stride=2, act="relu6")
    block = 0
    for expand, out, repeats, first_stride in MOBILENET_V2_STAGES:
        for r in range(repeats):
            block += 1
            x = inverted_residual(g, f"block{block}", x, divisible(out * width), expand, 3,
                                  first_stride if r == 0 else 1, "relu6")  # fmt: skip
    last = divisible(1280 * width) if width > 1.0 else 1280
    x = g.conv_bn("conv_last", x, last, 1, act="relu6")
    return g.model(f"mobilenet_v2_{width:g}_{resolution}", resolution, [g.classifier(x)])


# ---------------------------------------------------------------------------------------
# EfficientNet-B0 (Tan and Le 2019): MBConv blocks with squeeze-excite and swish
# ---------------------------------------------------------------------------------------

# (expansion, kernel, first stride, output channels, repeats), the paper's Table 1.
EFFICIENTNET_B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]  # fmt: skip
SE_RATIO = 0.25


def squeeze_excite(g: Graph, name: str, x: str, squeeze: int) -> str:
    """x * sigmoid(expand(swish(reduce(mean over H, W)))): `_pool` (GlobalAveragePool),
    `_reduce` and `_expand` (1x1 convs with bias), `_gate` (Sigmoid), `_scale` (Mul of
    the 1x1-spatial gate, broadcast over H x W)."""
    c = g.channels[x]
    s = g.node("GlobalAveragePool", [x], f"{name}_pool", c)
    s = g.activation("swish", f"{name}_swish", g.conv(f"{name}_reduce", s, squeeze, 1, bias=True))
    gate = g.node("Sigmoid", [g.conv(f"{name}_expand", s, c, 1, bias=True, gain=1.0)], f"{name}_gate", c)
    return g.node("Mul", [x, gate], f"{name}_scale", c)


def efficientnet_b0(width: float = 1.0, resolution: int = 224, seed: int = SEED) -> onnx.ModelProto:
    """stem (3x3 s2, 32, swish) + 16 MBConv blocks `blockN_*` + head (1x1, 1280) +
    classifier. Padding is symmetric (kernel // 2), as torchvision's EfficientNet."""
    check_resolution("efficientnet_b0", resolution)
    g = Graph(seed)
    x = g.conv_bn("stem", g.input("input", 3), divisible(32 * width), 3, stride=2, act="swish")
    block = 0
    for expand, kernel, first_stride, out, repeats in EFFICIENTNET_B0_STAGES:
        for r in range(repeats):
            block += 1
            squeeze = max(1, int(g.channels[x] * SE_RATIO))  # of the block's input channels
            x = inverted_residual(g, f"block{block}", x, divisible(out * width), expand, kernel,
                                  first_stride if r == 0 else 1, "swish", squeeze)  # fmt: skip
    x = g.conv_bn("head", x, divisible(1280 * width), 1, act="swish")
    return g.model(f"efficientnet_b0_{width:g}_{resolution}", resolution, [g.classifier(x)])


# ---------------------------------------------------------------------------------------
# ResNet-50 (He et al. 2016), v1.5: the stride of a downsampling block is in its 3x3 conv
# ---------------------------------------------------------------------------------------

# (bottleneck channels, blocks) of stages res2..res5; the output has 4x the channels.
RESNET50_STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]


def resnet50(width: float = 1.0, resolution: int = 224, seed: int = SEED) -> onnx.ModelProto:
    """Caffe's layer names: conv1 (7x7 s2) + pool1 (3x3 s2 max), bottleneck blocks
    res{2..5}{a,b,...} of branch2a (1x1), branch2b (3x3), branch2c (1x1) and a projection
    branch1 in each stage's first block, batch norm `bn*` after every conv; classifier."""
    check_resolution("resnet50", resolution)
    g = Graph(seed)
    x = g.conv_bn("conv1", g.input("input", 3), scaled(64, width), 7, stride=2)
    x = g.node("MaxPool", [x], "pool1", g.channels[x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for stage, (mid, blocks) in enumerate(RESNET50_STAGES, start=2):
        for b in range(blocks):
            name = f"res{stage}{chr(ord('a') + b)}"
            stride = 2 if b == 0 and stage > 2 else 1
            c_mid, c_out = scaled(mid, width), scaled(4 * mid, width)
            y = g.conv_bn(f"{name}_branch2a", x, c_mid, 1)
            y = g.conv_bn(f"{name}_branch2b", y, c_mid, 3, stride=stride)
            y = g.batchnorm(f"{name}_branch2c_bn", g.conv(f"{name}_branch2c", y, c_out, 1), gamma=RESIDUAL_GAMMA)
            if b == 0:
                x = g.conv_bn(f"{name}_branch1", x, c_out, 1, stride=stride, act=None, gain=1.0)
            x = g.activation("relu", f"{name}_relu", g.add(name, x, y))
    return g.model(f"resnet50_{width:g}_{resolution}", resolution, [g.classifier(x)])


# ---------------------------------------------------------------------------------------
# tiny-YOLOv3 (Redmon and Farhadi 2018; darknet's cfg/yolov3-tiny.cfg)
# ---------------------------------------------------------------------------------------

YOLO_ANCHORS_PER_HEAD = 3
YOLO_CLASSES = 80
HEAD_CHANNELS = YOLO_ANCHORS_PER_HEAD * (5 + YOLO_CLASSES)  # 255


def tiny_yolov3(width: float = 1.0, resolution: int = 416, seed: int = SEED) -> onnx.ModelProto:
    """darknet's layers, named by their index in yolov3-tiny.cfg: convN (conv + batch
    norm `convN_bn` + leaky ReLU 0.1 `convN_leaky`), maxpools poolN (2x2 s2; pool11 is
    2x2 stride 1 padded at the bottom and right only, as darknet pads), the first head
    conv15 on 13x13, route 17 from conv13, conv18 + upsample19 (Resize nearest x2),
    concat20 with conv8, the second head conv22 on 26x26 (at 416). The heads are plain
    1x1 convolutions with bias (no batch norm, linear), returned raw as `head1` and
    `head2` (the yolo layers' decoding is post-processing, not part of the network)."""
    check_resolution("tiny_yolov3", resolution)
    g = Graph(seed)

    def conv(index: int, x: str, out: int, kernel: int) -> str:
        # Gain 1, not He's 2: the max pools that follow most convs raise the scale instead.
        return g.conv_bn(f"conv{index}", x, scaled(out, width), kernel, act="leaky", gain=1.0)

    def pool(index: int, x: str, stride: int = 2) -> str:
        pads = [0, 0, 0, 0] if stride == 2 else [0, 0, 1, 1]
        return g.node(
            "MaxPool", [x], f"pool{index}", g.channels[x], kernel_shape=[2, 2], strides=[stride, stride], pads=pads
        )

    def head(index: int, x: str, output: str) -> str:
        return g.conv(f"conv{index}", x, HEAD_CHANNELS, 1, bias=True, gain=1.0, output=output)

    x = g.input("input", 3)
    for index, out in ((0, 16), (2, 32), (4, 64), (6, 128)):
        x = pool(index + 1, conv(index, x, out, 3))
    route8 = conv(8, x, 256, 3)
    x = conv(10, pool(9, route8), 512, 3)
    x = pool(11, x, stride=1)
    x = conv(12, x, 1024, 3)
    route13 = conv(13, x, 256, 1)
    head1 = head(15, conv(14, route13, 512, 3), "head1")
    y = conv(18, route13, 128, 1)
    scales = g.constant("upsample19.scales", np.array([1, 1, 2, 2], dtype=np.float32))
    y = g.node("Resize", [y, "", scales], "upsample19", g.channels[y], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip
    y = g.node("Concat", [y, route8], "concat20", g.channels[y] + g.channels[route8], axis=1)
    head2 = head(22, conv(21, y, 256, 3), "head2")
    return g.model(f"tiny_yolov3_{width:g}_{resolution}", resolution, [head1, head2])


Builder = Callable[..., onnx.ModelProto]

MODELS: dict[str, Builder] = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_b0": efficientnet_b0,
    "resnet50": resnet50,
    "tiny_yolov3": tiny_yolov3,
}

DEFAULT_RESOLUTION = {"tiny_yolov3": 416}


def build(name: str, width: float = 1.0, resolution: int | None = None, seed: int = SEED) -> onnx.ModelProto:
    """The model `name` (a key of MODELS; '-' and '_' alike), checked by onnx.checker."""
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    model = MODELS[key](width, resolution or DEFAULT_RESOLUTION.get(key, 224), seed)
    onnx.checker.check_model(model)
    return model
