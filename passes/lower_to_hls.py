"""`lower-to-hls`: a quantized (`qnn`) or float (`nn`) program to a dataflow accelerator
(`dataflow` dialect).

    lower-to-hls{arch=sesl|seml|hybrid pes=4 layer-pes="conv1:8","fc:2" split=2 conv=direct|im2row
                 dtype=int8|float|half}

The data type (`dtype`, default: int8 for a quantized program, float otherwise):
- `int8`: the `qnn` program, bit-exact with the reference executor;
- `float`: the float `nn` program (fold batch norms and fuse activations first), every
  layer in float32;
- `half`: the float `nn` program computed in IEEE half: the weights are converted with
  NumPy's float16 (new weights `<handle>.f16`), the payloads are retyped to f16, and two
  `convert` kernels turn the float32 ports into half streams and back.
Float and half layers take the activation behind a conv, dense or add layer (relu, clip,
leaky relu; the only reader of its result) into the layer's payload; other activations are
element-wise kernels. The reused engines are int8 only: float and half accelerators are
`sesl`.

The engine assignment decides where each layer runs:
- `sesl`: one `dataflow.kernel` per layer (an instance of the layer's template with its
  PEs), joined by `dataflow.stream`s in the DATAFLOW region;
- `seml`: one `dataflow.engine` per engine kind (conv, pool, add) with run-time-shaped
  loops, and a `dataflow.schedule` that invokes them layer after layer on feature-map
  slots (ping-pong buffers), the weights read from a DDR image;
- `hybrid`: the first `split` layers as pipeline kernels, the rest on the reused engines;
  every feature map that crosses goes through a `double` buffer.
The graph's first `qnn.quantize` and last `qnn.dequantize` are always streaming kernels
(the float ports), whatever the architecture.

Where the assignment comes from: an `accel`-mapped module (`assign-engines`: each
`accel.layer`'s engine role and PEs) when the module has one, else the options: `pes` for
every engine, `layer-pes` per layer (quoted `"name:pes"` entries), `split` for hybrid (default:
half of the layers). A kernel's PEs must divide its parallel dimension: the largest divisor
not above the assigned count is taken.

Layouts: streams and slots hold feature maps in HWC order, so a flatten (`nn.reshape`
of 1 x C x H x W to 1 x CHW) costs nothing, and the dense layer behind it gets its weight
columns permuted from CHW to HWC order (a new weight, `<handle>.hwc`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import Float16Type, ModuleOp, StringAttr, SymbolRefAttr, TensorType
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from compiler.errors import LayerloomError, UnsupportedError
from compiler.mapping import ARCH_ATTR, BUDGET_ATTR, PLAN_ATTR, TARGET_ATTR
from compiler.program import WeightStore, weights_of
from dialects import nn, qnn
from dialects.dataflow import (
    ARCHS,
    BufferOp,
    BufferType,
    EngineOp,
    InvokeOp,
    KernelOp,
    ScheduleOp,
    StreamOp,
    StreamType,
    TopOp,
    ints_dict,
    payload,
)
from dialects.nn import i64attr, int_list, ints, is_float, shape_of
from passes.utils import new_weight, sole_user

WHERE = "lower-to-hls"
CONV_TEMPLATES = ("direct", "im2row")
DTYPES = ("int8", "float", "half")
ACTIVATION_OPS = (nn.ReluOp, nn.ClipOp, nn.LeakyReluOp)
CONV_OPS = (qnn.Conv2dOp, nn.Conv2dOp)
DENSE_OPS = (qnn.GemmOp, qnn.MatMulOp, nn.GemmOp, nn.MatMulOp)
GEMM_OPS = (qnn.GemmOp, nn.GemmOp)
# The float nn ops a float or half accelerator computes (views aside).
FLOAT_LAYERS = (nn.Conv2dOp, nn.GemmOp, nn.MatMulOp, nn.PoolOp, nn.GlobalPoolOp, nn.AddOp, nn.ConcatOp,
                *ACTIVATION_OPS)
# Layers that can take the activation behind them into their payload (float and half).
FUSING_LAYERS = (nn.Conv2dOp, nn.GemmOp, nn.MatMulOp, nn.AddOp)
PIPE, REUSED = "pipe", "reused"
ENGINE_OF: dict[type[Operation], str] = {
    qnn.Conv2dOp: "conv", qnn.GemmOp: "conv", qnn.MatMulOp: "conv",
    qnn.PoolOp: "pool", qnn.GlobalPoolOp: "pool", nn.PoolOp: "pool", nn.GlobalPoolOp: "pool", qnn.AddOp: "add",
}
VIEW_OPS = (nn.ReshapeOp, nn.IdentityOp)


@dataclass(frozen=True)
class LowerToHlsPass(ModulePass):
    """Lower a qnn program to the dataflow dialect (see the module docstring)."""

    name = "lower-to-hls"

    arch: str = ""
    pes: int = 1
    layer_pes: tuple[str, ...] = ()
    split: int = -1
    conv: str = "direct"
    dtype: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lower_to_hls(op, weights_of(op), self.assignment_options())

    def assignment_options(self) -> Options:
        if self.arch not in ("", *ARCHS):
            raise LayerloomError(f"arch must be one of {', '.join(ARCHS)}, got '{self.arch}'", WHERE)
        if self.conv not in CONV_TEMPLATES:
            raise LayerloomError(f"conv must be one of {', '.join(CONV_TEMPLATES)}, got '{self.conv}'", WHERE)
        if self.pes < 1:
            raise LayerloomError(f"pes must be positive, got {self.pes}", WHERE)
        if self.dtype not in ("", *DTYPES):
            raise LayerloomError(f"dtype must be one of {', '.join(DTYPES)}, got '{self.dtype}'", WHERE)
        layer_pes: dict[str, int] = {}
        for entry in self.layer_pes:
            name, _, count = entry.rpartition(":")
            if not name or not count.isdigit() or int(count) < 1:
                raise LayerloomError(f"layer-pes entry '{entry}' is not NAME:PES with positive PES", WHERE)
            layer_pes[name] = int(count)
        return Options(self.arch, self.pes, layer_pes, self.split, self.conv, self.dtype)


@dataclass(frozen=True)
class Options:
    arch: str = ""  # "": the accel mapping's, else sesl
    pes: int = 1
    layer_pes: dict[str, int] = field(default_factory=dict)
    split: int = -1
    conv: str = "direct"
    dtype: str = ""  # "": int8 for a quantized program, float otherwise


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of n that is <= at_most (>= 1)."""
    return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def identifier(text: str) -> str:
    """A C identifier from a layer or tensor name."""
    name = re.sub(r"\W", "_", text).strip("_") or "t"
    return f"t_{name}" if name[0].isdigit() else name


def stream_shape(value: SSAValue, where: str) -> tuple[int, ...]:
    """Per-image shape of a feature map (C, H, W) or vector (K,) that a stream carries."""
    shape = shape_of(value)
    if len(shape) in (2, 4) and shape[0] == 1:
        return tuple(shape[1:])
    raise UnsupportedError(f"the HLS backend streams 1 x C x H x W maps and 1 x K vectors, not {list(shape)}", where)


def element(value: SSAValue) -> Attribute:
    t = value.type
    assert isinstance(t, TensorType)
    return t.get_element_type()


def layer_name(op: Operation, index: int) -> str:
    name = op.layer_name if isinstance(op, nn.NNOp) else ""
    return name or f"{op.name.partition('.')[2]}_{index}"


def window_params(op: qnn.Conv2dOp | nn.Conv2dOp | qnn.PoolOp | nn.PoolOp, kernel: Sequence[int]) -> dict[str, int]:
    """The Window<...> geometry of a conv or pool: input C, H, W, kernel, strides, pads
    (top, left, bottom, right), dilations."""
    _, c, h, w = shape_of(op.operands[0])
    sh, sw = int_list(op.strides)
    pt, pl, pb, pr = int_list(op.pads)
    dh, dw = int_list(op.dilations)
    return {"C": c, "H": h, "W": w, "KH": kernel[0], "KW": kernel[1], "SH": sh, "SW": sw,
            "PT": pt, "PL": pl, "PB": pb, "PR": pr, "DH": dh, "DW": dw}


# ---------------------------------------------------------------------------------------
# The template of each pipeline layer
# ---------------------------------------------------------------------------------------


def kernel_template(op: Operation, conv: str, where: str) -> tuple[str, dict[str, int], int]:
    """(template, compile-time params, parallel dimension the PEs must divide)."""
    if isinstance(op, qnn.QuantizeOp | qnn.DequantizeOp | qnn.RequantizeOp | qnn.LutOp):
        template = {qnn.QuantizeOp: "quantize", qnn.DequantizeOp: "dequantize",
                    qnn.RequantizeOp: "requantize", qnn.LutOp: "lookup"}[type(op)]
        return template, {"N": int(np.prod(shape_of(op.operands[0])))}, 1
    if isinstance(op, ACTIVATION_OPS):
        return "activation", {"N": int(np.prod(shape_of(op.operands[0])))}, 1
    if isinstance(op, CONV_OPS):
        m, _, kh, kw = shape_of(op.weight)
        group = int(op.group.value.data)
        p = window_params(op, (kh, kw)) | {"M": m}
        c = p["C"]
        if group == c and c > 1 and m % c == 0:
            return "depthwise_conv2d", p, m
        if group == 1 and (kh, kw) == (1, 1) and p["SH"] == p["SW"] == 1 and p["PT"] + p["PL"] + p["PB"] + p["PR"] == 0:
            return "pointwise_conv2d", {"C": c, "H": p["H"], "W": p["W"], "M": m}, m
        if group == 1 and conv == "im2row":
            return "conv2d_im2row", p, m
        return "conv2d", p | {"G": group}, m // group
    if isinstance(op, DENSE_OPS):
        k, n = dense_shape(op, where)
        return "dense", {"K": k, "N": n}, n
    if isinstance(op, qnn.PoolOp | nn.PoolOp):
        p = window_params(op, int_list(op.kernel)) | {"CEIL": int(op.ceil_mode.value.data)}
        if op.kind.data == "max":
            return "max_pool2d", p, p["C"]
        return "avg_pool2d", p | {"COUNT_INCLUDE_PAD": int(op.count_include_pad.value.data)}, p["C"]
    if isinstance(op, qnn.GlobalPoolOp | nn.GlobalPoolOp):
        _, c, h, w = shape_of(op.input)
        return f"global_{op.kind.data}_pool", {"C": c, "H": h, "W": w}, 1
    if isinstance(op, qnn.AddOp | nn.AddOp):
        if shape_of(op.lhs) != shape_of(op.rhs):
            raise UnsupportedError(f"add of shapes {list(shape_of(op.lhs))} and {list(shape_of(op.rhs))}: "
                                   "the HLS add does not broadcast", where)
        return "add", {"N": int(np.prod(shape_of(op.lhs)))}, 1
    if isinstance(op, qnn.ConcatOp | nn.ConcatOp):
        shapes = [shape_of(v) for v in op.inputs]
        if len(shapes) != 2 or int(op.axis.value.data) != 1 or len(shapes[0]) != 4:
            raise UnsupportedError("the HLS concat joins two 1 x C x H x W maps along the channels", where)
        return "concat_channels", {"PIXELS": shapes[0][2] * shapes[0][3], "CA": shapes[0][1], "CB": shapes[1][1]}, 1
    raise UnsupportedError(f"{op.name} has no HLS template", where)


def is_max_pool(op: Operation) -> bool:
    """Max pooling that quantize left as an nn op: on int8 (a layout op: it keeps the scale),
    or on the float input before the first quantize."""
    return isinstance(op, nn.PoolOp | nn.GlobalPoolOp) and op.kind.data == "max"


def streams_floats(op: Operation) -> bool:
    """A boundary layer: the graph's quantize / dequantize, or a float op before the first
    quantize. These always stream (the reused engines work on int8)."""
    return isinstance(op, qnn.QuantizeOp | qnn.DequantizeOp) or nn.is_float(element(op.operands[0]))


ELEMENTWISE = (qnn.QuantizeOp, qnn.DequantizeOp, qnn.RequantizeOp, qnn.LutOp)


def dense_shape(op: Operation, where: str) -> tuple[int, int]:
    """(K, N) of a fully connected layer on a 1 x K vector."""
    a, b = shape_of(op.operands[0]), shape_of(op.operands[1])
    if len(a) != 2 or a[0] != 1 or len(b) != 2:
        raise UnsupportedError(f"a dense layer takes a 1 x K vector and a 2-d weight, got {list(a)} and {list(b)}", where)
    if not isinstance(op.operands[1].owner, nn.WeightOp):
        raise UnsupportedError("a dense layer's second operand must be a weight", where)
    if isinstance(op, nn.GemmOp) and op.trans_a.value.data:
        raise UnsupportedError("a dense layer with trans_a has no HLS template", where)
    return (b[1], b[0]) if transposed(op) else (b[0], b[1])


def transposed(op: Operation) -> bool:
    """Whether a dense layer's weight is N x K (ONNX Gemm with trans_b), else K x N."""
    return isinstance(op, GEMM_OPS) and bool(op.trans_b.value.data)


# ---------------------------------------------------------------------------------------
# Run-time steps of the reused engines (layerloom/engine_seml.h)
# ---------------------------------------------------------------------------------------


def conv_step(op: Operation, where: str) -> dict[str, int]:
    assert isinstance(op, qnn.Conv2dOp | qnn.GemmOp | qnn.MatMulOp)
    if isinstance(op, qnn.Conv2dOp):
        m, _, kh, kw = shape_of(op.weight)
        p = window_params(op, (kh, kw))
        _, _, oh, ow = shape_of(op.result)
        geometry = {k: p[k] for k in ("C", "H", "W", "KH", "KW", "SH", "SW", "PT", "PL", "DH", "DW")}
        geometry |= {"M": m, "G": int(op.group.value.data), "OH": oh, "OW": ow}
    else:
        k, n = dense_shape(op, where)
        geometry = {"C": k, "H": 1, "W": 1, "KH": 1, "KW": 1, "SH": 1, "SW": 1, "PT": 0, "PL": 0, "DH": 1, "DW": 1,
                    "M": n, "G": 1, "OH": 1, "OW": 1}
    lo, hi = op.clamp_range()
    return geometry | {"zx": op.input_quantization()[1], "zw": int(op.weight_zero_point.value.data)
                       if op.weight_zero_point is not None else 0, "zy": output_zero_point(op),
                       "lo": lo, "hi": hi, "leaky": int(op.neg_shifts is not None)}


def output_zero_point(op: qnn.QNNOp) -> int:
    quantization = op.result_quantization()
    assert quantization is not None, "an int8 result has a zero point"
    return quantization[1]


def pool_step(op: Operation) -> dict[str, int]:
    assert isinstance(op, qnn.PoolOp | qnn.GlobalPoolOp | nn.PoolOp | nn.GlobalPoolOp)
    _, c, h, w = shape_of(op.input)
    _, _, oh, ow = shape_of(op.result)
    if isinstance(op, qnn.PoolOp | nn.PoolOp):
        p = window_params(op, int_list(op.kernel))
        include_pad, first = int(op.count_include_pad.value.data), 1
    else:
        p = {"C": c, "H": h, "W": w, "KH": h, "KW": w, "SH": 1, "SW": 1, "PT": 0, "PL": 0, "PB": 0, "PR": 0,
             "DH": 1, "DW": 1}
        include_pad, first = 0, h * w
    if isinstance(op, nn.NNOp) and not isinstance(op, qnn.QNNOp):  # int8 max pooling: no quantization
        lo, hi = qnn.type_range(element(op.input)) or (0, 0)
        return p | {"OH": oh, "OW": ow, "avg": 0, "count_include_pad": 0, "first_count": first, "zx": 0, "zy": 0,
                    "lo": lo, "hi": hi}
    zy = output_zero_point(op)
    lo, hi = op.clamp_range() if op.kind.data == "avg" else op.result_range()
    return p | {"OH": oh, "OW": ow, "avg": int(op.kind.data == "avg"), "count_include_pad": include_pad,
                "first_count": first, "zx": op.input_quantization()[1], "zy": zy, "lo": lo, "hi": hi}


def add_step(op: Operation) -> dict[str, int]:
    assert isinstance(op, qnn.AddOp)
    a, b = op.operand_requants()
    stage = op.output_stage()
    (_, za), (_, zb) = op.input_quantizations()
    return {"N": int(np.prod(shape_of(op.lhs))), "za": za, "zb": zb,
            "ma": int(a.multipliers.reshape(-1)[0]), "sa": int(a.shifts.reshape(-1)[0]),
            "mb": int(b.multipliers.reshape(-1)[0]), "sb": int(b.shifts.reshape(-1)[0]),
            "m": int(stage.requant.multipliers.reshape(-1)[0]), "s": int(stage.requant.shifts.reshape(-1)[0]),
            "zy": stage.zero_point, "lo": stage.lo, "hi": stage.hi}


def step_of(kind: str, op: Operation, where: str) -> dict[str, int]:
    """The run-time descriptor of a layer on the reused engine of `kind`."""
    if kind == "conv":
        return conv_step(op, where)
    return pool_step(op) if kind == "pool" else add_step(op)


def ddr_sizes(kind: str, step: dict[str, int]) -> tuple[int, int]:
    """(int8 weights, int32 parameters) a reused layer reads from the DDR image:
    conv: the M x (C/G * KH * KW) weights; bias, multipliers, shifts, negative multipliers
    and shifts per output channel. Average pooling: multiplier and shift per window count."""
    if kind == "conv":
        k = step["C"] // step["G"] * step["KH"] * step["KW"]
        return step["M"] * k, 5 * step["M"]
    if kind == "pool" and step["avg"]:
        return 0, 2 * (step["KH"] * step["KW"] - step["first_count"] + 1)
    return 0, 0


# ---------------------------------------------------------------------------------------
# The lowering
# ---------------------------------------------------------------------------------------


@dataclass
class Layer:
    op: Operation
    name: str
    place: str
    pes: int = 1
    activation: Operation | None = None  # float layers: the activation fused behind the op


Reader = tuple[Operation | str, int]  # (consumer: a layer op, "cross" or "out"; operand index)


class Lowering:
    def __init__(self, func: FuncOp, store: WeightStore, options: Options,
                 assigned: dict[Operation, tuple[str, int]] | None = None) -> None:
        self.func = func
        self.assigned = assigned
        self.store = store
        self.options = options
        self.where = WHERE
        self.views: dict[SSAValue, SSAValue] = {}  # reshape / identity result -> its source
        self.flattened: dict[SSAValue, tuple[int, int, int]] = {}  # vector -> the C, H, W it flattens
        self.layers: list[Layer] = []
        self.output: SSAValue | None = None
        self.names: set[str] = set()
        self.top_block = Block()
        self.stream_of: dict[Reader, SSAValue] = {}  # the stream a reader reads
        self.writes: dict[SSAValue, SSAValue] = {}  # value -> the stream its producer writes
        self.dtype = options.dtype
        self.half_ports: list[KernelOp] = []  # half: the convert kernels of the input and output ports

    # --- reading the program --------------------------------------------------------------

    def source(self, value: SSAValue) -> SSAValue:
        while value in self.views:
            value = self.views[value]
        return value

    def flattening(self, value: SSAValue) -> tuple[int, int, int] | None:
        """The C, H, W that `value` flattens (through views and element-wise layers), if any."""
        while True:
            if value in self.flattened:
                return self.flattened[value]
            if value not in self.views:
                return None
            value = self.views[value]

    def unique(self, text: str) -> str:
        base = identifier(text)
        name, n = base, 1
        while name in self.names:
            name, n = f"{base}_{n}", n + 1
        self.names.add(name)
        return name

    def read_program(self) -> None:
        block = self.func.body.block
        if len(block.args) != 1 or len(self.func.function_type.outputs.data) != 1:
            raise UnsupportedError("the HLS backend builds accelerators with one input and one output", WHERE)
        for index, op in enumerate(block.ops):
            where = f"{op.name} '{layer_name(op, index)}'"
            if isinstance(op, nn.WeightOp):
                continue
            if isinstance(op, ReturnOp):
                self.output = self.source(op.operands[0])
            elif isinstance(op, VIEW_OPS):
                self.read_view(op, where)
            elif self.dtype != "int8" and isinstance(op, ACTIVATION_OPS) and self.fuse(op):
                continue
            elif isinstance(op, qnn.QNNOp) or is_max_pool(op) or (self.dtype != "int8" and isinstance(op, FLOAT_LAYERS)):
                name = self.unique(layer_name(op, index))
                self.layers.append(Layer(op, name, PIPE))
                chw = self.flattening(op.operands[0])
                if isinstance(op, (*ELEMENTWISE, *ACTIVATION_OPS)) and chw is not None:
                    self.flattened[op.results[0]] = chw
            elif self.dtype == "int8":
                raise UnsupportedError(f"{op.name} has no HLS kernel (quantize the program first)", where)
            else:
                raise UnsupportedError(f"{op.name} has no {self.dtype} HLS kernel", where)
        self.check_flattens()

    def fuse(self, activation: Operation) -> bool:
        """Take a float activation into the payload of the layer that produces its operand (a
        conv, dense or add without an activation, read by nothing else). Its result then
        stands for the layer's: a view."""
        producer = activation.operands[0].owner
        layer = next((layer for layer in self.layers if layer.op is producer), None)
        if layer is None or not isinstance(producer, FUSING_LAYERS) or layer.activation is not None:
            return False
        if producer.properties.get("activation") is not None or sole_user(producer.results[0]) is not activation:
            return False
        layer.activation = activation
        self.views[activation.results[0]] = producer.results[0]
        return True

    def check_flattens(self) -> None:
        """A flattened C x H x W map (H * W > 1) travels in HWC order: only a dense layer (whose
        columns are permuted) or an element-wise layer on its way to one may read it."""
        for layer in self.layers:
            chw = self.flattening(layer.op.operands[0])
            if chw is not None and not isinstance(layer.op, (*DENSE_OPS, *ELEMENTWISE, *ACTIVATION_OPS)):
                raise UnsupportedError(f"reads a flattened {'x'.join(map(str, chw))} map, which streams in HWC order; "
                                       "only a dense layer may read it", f"{layer.op.name} '{layer.name}'")
        assert self.output is not None
        if self.flattening(self.output) is not None:
            raise UnsupportedError("the output is a flattened C x H x W map, which streams in HWC order: end the "
                                   "model with a dense layer (or without the flatten)", WHERE)

    def read_view(self, op: Operation, where: str) -> None:
        src, dst = shape_of(op.operands[0]), shape_of(op.results[0])
        self.views[op.results[0]] = op.operands[0]
        if src == dst:
            return
        if len(src) == 4 and len(dst) == 2 and src[0] == dst[0] == 1:
            if src[2] * src[3] > 1 and src[1] > 1:
                self.flattened[op.results[0]] = (src[1], src[2], src[3])
            return
        if len(src) == 2 and len(dst) == 4 and dst[2] * dst[3] == 1:
            return
        raise UnsupportedError(f"reshape of {list(src)} to {list(dst)} is not a flatten", where)

    # --- the assignment --------------------------------------------------------------------

    def assign(self) -> None:
        if self.assigned is not None:
            for layer in self.layers:
                layer.place, layer.pes = self.assigned.get(layer.op, (PIPE, 1))
                if streams_floats(layer.op):
                    layer.place = PIPE  # the float side streams, whatever engine the mapping chose
            self.check_order()
            return
        compute = [layer for layer in self.layers if not streams_floats(layer.op)]
        arch = self.options.arch
        if arch == "sesl":
            pipeline = len(compute)
        elif arch == "seml":
            pipeline = 0
        else:
            pipeline = self.options.split if self.options.split >= 0 else len(compute) // 2
            if pipeline > len(compute):
                raise LayerloomError(f"split {pipeline} exceeds the {len(compute)} layers", WHERE)
        for i, layer in enumerate(compute):
            layer.place = PIPE if i < pipeline else REUSED
        for layer in self.layers:
            layer.pes = self.options.layer_pes.get(layer.name, self.options.pes)
        unknown = set(self.options.layer_pes) - {layer.name for layer in self.layers}
        if unknown:
            raise LayerloomError(f"layer-pes names unknown layers: {', '.join(sorted(unknown))}", WHERE)
        self.check_order()

    def check_order(self) -> None:
        """Pipeline layers come before the reused engines: no pipeline layer (but the final
        dequantize) may read a feature map the reused engines produce."""
        reused = {r for layer in self.layers if layer.place == REUSED for r in layer.op.results}
        for layer in self.layers:
            if layer.place != PIPE:
                continue
            reads = [v for v in self.activations(layer.op) if v in reused]
            if reads and not (isinstance(layer.op, qnn.DequantizeOp) and self.source(layer.op.results[0]) == self.output):
                raise UnsupportedError("a pipeline layer reads a feature map of the reused engines: the pipeline must "
                                       "come first", f"{layer.op.name} '{layer.name}'")

    def activations(self, op: Operation) -> list[SSAValue]:
        return [self.source(v) for v in op.operands if not isinstance(v.owner, nn.WeightOp)]

    # --- building ------------------------------------------------------------------------

    def add(self, op: Operation) -> Operation:
        self.top_block.add_op(op)
        return op

    def stream_type(self, value: SSAValue) -> Attribute:
        """The element type a stream of `value` carries: its tensor's, or f16 inside a half
        accelerator."""
        t = element(value)
        return Float16Type() if self.dtype == "half" and is_float(t) else t

    def new_stream(self, name: str, value: SSAValue, element_type: Attribute, port: str | None = None,
                   depth: int = 2) -> SSAValue:
        props: dict[str, Attribute | None] = {"name": StringAttr(name), "shape": ints(stream_shape(value, self.where)),
                                       "depth": i64attr(depth)}
        if port is not None:
            props["port"] = StringAttr(port)
        return self.add(StreamOp.build(properties=props, result_types=[StreamType(element_type)])).results[0]

    def readers(self) -> dict[SSAValue, list[Reader]]:
        """Who reads each pipeline-side value (the input port's or a pipeline kernel's), in
        program order: pipeline layers (by operand index), the reused engines (("cross", k):
        the k-th map that crosses into them) and the output port (("out", 0)). The final
        dequantize's read of the reused engines' result is the schedule's business."""
        place: dict[SSAValue, str] = {r: layer.place for layer in self.layers for r in layer.op.results}
        result: dict[SSAValue, list[Reader]] = {}
        crossing: list[SSAValue] = []
        for layer in self.layers:
            for i, v in enumerate(self.activations(layer.op)):
                if place.get(v, PIPE) == REUSED:
                    continue
                if layer.place == PIPE:
                    key: Reader = (layer.op, i)
                else:
                    if v not in crossing:
                        crossing.append(v)
                    key = ("cross", crossing.index(v))
                if key not in result.setdefault(v, []):
                    result[v].append(key)
        assert self.output is not None
        if place.get(self.output, PIPE) == PIPE:
            result.setdefault(self.output, []).append(("out", 0))
        return result

    def wire_streams(self, readers: dict[SSAValue, list[Reader]]) -> dict[SSAValue, Operation]:
        """Streams for every value a pipeline kernel writes (or the input port carries):
        one per reader, through a fork kernel when there are several. Returns the forks by
        the value they copy."""
        arg = self.func.body.block.args[0]
        forks: dict[SSAValue, Operation] = {}
        producer_names: dict[SSAValue, str] = {r: layer.name for layer in self.layers for r in layer.op.results}
        for value, value_readers in readers.items():
            base = self.port_name(self.func, "input") if value is arg else f"{producer_names[value]}_out"
            depth = self.depth(value)
            if value is arg:
                head = self.input_port(value, depth)
            elif value_readers == [("out", 0)]:
                head = self.output_port(value, depth)
            else:
                head = self.new_stream(self.unique(base), value, self.stream_type(value), depth=depth)
            self.writes[value] = head
            if len(value_readers) == 1:
                self.stream_of[value_readers[0]] = head
                continue
            branches = []
            for reader in value_readers:
                if reader[0] == "out":
                    branch = self.output_port(value, depth)
                else:
                    consumer = reader[0]
                    target = "reused" if isinstance(consumer, str) else producer_names[consumer.results[0]]
                    # A fork's branches run apart (one through a deep path, one skipping it):
                    # each holds a whole feature map so that neither branch stalls the other.
                    branch = self.new_stream(self.unique(f"{base}_to_{target}"), value, self.stream_type(value),
                                             depth=int(np.prod(stream_shape(value, self.where))))
                self.stream_of[reader] = branch
                branches.append(branch)
            forks[value] = self.adapter("fork", [head], branches, value, f"{base}_fork")
        return forks

    def input_port(self, value: SSAValue, depth: int) -> SSAValue:
        """The stream the kernels read the input from: the axis port, or in a half accelerator
        the half side of the port's convert kernel."""
        port = self.new_stream(self.port_name(self.func, "input"), value, element(value), "in", depth)
        if self.dtype != "half":
            return port
        half = self.new_stream(self.unique(f"{self.port_name(self.func, 'input')}_half"), value, self.stream_type(value),
                               depth=depth)
        self.half_ports.append(self.adapter("convert", [port], [half], value, "input_to_half"))
        return half

    def output_port(self, value: SSAValue, depth: int) -> SSAValue:
        """The stream the last kernel writes the output to: the axis port, or in a half
        accelerator the half side of the port's convert kernel."""
        name = self.port_name(self.func, "output")
        if self.dtype != "half":
            return self.new_stream(name, value, element(value), "out", depth)
        half = self.new_stream(self.unique(f"{name}_half"), value, self.stream_type(value), depth=depth)
        port = self.new_stream(name, value, element(value), "out", depth)
        self.half_ports.append(self.adapter("convert", [half], [port], value, "output_to_float"))
        return half

    def depth(self, value: SSAValue) -> int:
        """FIFO depth of a straight edge: one pixel (all channels), so a producer can write a
        pixel's outputs while its consumer is still busy."""
        shape = stream_shape(value, self.where)
        return max(2, shape[0]) if len(shape) == 3 else 2

    @staticmethod
    def port_name(func: FuncOp, kind: str) -> str:
        attrs = func.arg_attrs if kind == "input" else func.res_attrs
        if attrs is not None and len(attrs.data) >= 1:
            name = attrs.data[0].data.get("nn.name")
            if isinstance(name, StringAttr):
                return identifier(name.data)
        return "x" if kind == "input" else "y"

    def adapter(self, template: str, inputs: list[SSAValue], outputs: list[SSAValue], value: SSAValue,
                name: str) -> KernelOp:
        n = int(np.prod(stream_shape(value, self.where)))
        params = {"N": n} if template != "fork" else {"N": n, "WAYS": len(outputs)}
        return KernelOp.build(
            operands=[inputs, outputs],
            properties={"template": StringAttr(template), "params": ints_dict(params), "pes": i64attr(1),
                        "layer": StringAttr(name)},
            regions=[[]],
        )

    def layer_payload(self, layer: Layer | Operation) -> Region:
        """The layer's payload (with its fused activation): a dense layer behind a flatten
        gets its columns in HWC order; a half layer gets f16 weights and types."""
        op, activation = (layer.op, layer.activation) if isinstance(layer, Layer) else (layer, None)
        chw = self.flattening(op.operands[0]) if isinstance(op, DENSE_OPS) else None
        replace = {}
        for v in op.operands:
            weight = v.owner
            permute = chw is not None and v is op.operands[1]
            to_half = self.dtype == "half" and is_float(element(v))
            if not isinstance(weight, nn.WeightOp) or not (permute or to_half):
                continue
            w, suffix = self.store[weight.handle.data], ""
            if chw is not None and permute:
                c, h, wd = chw
                # Column k of the CHW flatten is (c, y, x); the HWC stream delivers (y, x, c) at k'.
                order = np.arange(c * h * wd).reshape(c, h, wd).transpose(1, 2, 0).reshape(-1)
                w, suffix = np.ascontiguousarray(np.take(w, order, axis=1 if transposed(op) else 0)), ".hwc"
            if to_half:
                w, suffix = half_weight(w, weight.handle.data), suffix + ".f16"
            replace[v] = new_weight(self.store, w, weight.handle.data + suffix, weight.node_name)
        return payload(op, replace, activation=activation, retype=self.retype if self.dtype == "half" else None)

    @staticmethod
    def retype(t: Attribute) -> Attribute:
        """A float tensor type as f16 (the payloads of a half accelerator)."""
        if isinstance(t, TensorType) and is_float(t.get_element_type()):
            return TensorType(Float16Type(), t.get_shape())
        return t

    def pipe_kernel(self, layer: Layer) -> KernelOp:
        where = f"{layer.op.name} '{layer.name}'"
        template, params, parallel = kernel_template(layer.op, self.options.conv, where)
        inputs = [self.stream_of[(layer.op, i)] for i in range(len(self.activations(layer.op)))]
        result = layer.op.results[0]
        outputs = [self.writes[result]] if result in self.writes else []
        if not outputs:
            raise UnsupportedError("the layer's result is not used", where)
        props: dict[str, Attribute | None] = {"template": StringAttr(template), "params": ints_dict(params),
                                              "pes": i64attr(largest_divisor(parallel, layer.pes)),
                                              "layer": StringAttr(layer.name)}
        return KernelOp.build(operands=[inputs, outputs], properties=props, regions=[self.layer_payload(layer)])

    # --- the reused engines ------------------------------------------------------------------

    def build_schedule(self, readers: dict[SSAValue, list[Reader]]) -> None:
        reused = [layer for layer in self.layers if layer.place == REUSED]
        if not reused:
            return
        for layer in reused:
            if type(layer.op) not in ENGINE_OF:
                raise UnsupportedError(f"{layer.op.name} has no reused engine (put it on the pipeline)",
                                       f"{layer.op.name} '{layer.name}'")
        produced = {layer.op.results[0] for layer in reused}
        crossing = {key[1]: v for v, rs in readers.items() for key in rs if key[0] == "cross"}
        assert self.output is not None
        out_value: SSAValue = self.output
        dequantize = next((layer for layer in self.layers if isinstance(layer.op, qnn.DequantizeOp)
                           and layer.op.results[0] == self.output and layer.place == PIPE), None)
        if dequantize is not None:
            out_value = self.source(dequantize.op.operands[0])
        if out_value not in produced:
            raise UnsupportedError("the reused engines' result is not the graph's output", WHERE)
        # Double buffers for the maps that cross from the pipeline (filled by stream_to_buffer).
        doubles: dict[SSAValue, SSAValue] = {}
        for k, value in sorted(crossing.items()):
            n = int(np.prod(stream_shape(value, self.where)))
            name = self.unique(f"{self.producer_name(value)}_to_reused")
            buffer = self.add(BufferOp.build(
                properties={"name": StringAttr(name), "kind": StringAttr("double"), "size": i64attr(n)},
                result_types=[BufferType(element(value))])).results[0]
            self.add(self.adapter("stream_to_buffer", [self.stream_of[("cross", k)]], [buffer], value, f"{name}_fill"))
            doubles[value] = buffer
        # The stream the schedule writes: the output port, or the final dequantize's input.
        out_stream = self.new_stream(
            self.port_name(self.func, "output") if dequantize is None else self.unique(f"{self.producer_name(out_value)}_out"),
            out_value, element(out_value), "out" if dequantize is None else None, self.depth(out_value))
        if dequantize is not None:
            self.stream_of[(dequantize.op, 0)] = out_stream
        steps = self.slot_plan(reused, list(doubles), out_value)
        slot_size = max(int(np.prod(stream_shape(v, self.where))) for v in steps.values_in_slots)
        engines = self.engines(reused)
        for engine in engines.values():
            self.add(engine)
        body = Block()
        slot_ops = [BufferOp.build(
            properties={"name": StringAttr(f"slot{i}"), "kind": StringAttr("slot"), "size": i64attr(slot_size)},
            result_types=[BufferType(steps.element)]) for i in range(steps.count)]
        body.add_ops(slot_ops)
        slots = [op.results[0] for op in slot_ops]
        for crossed, double in doubles.items():
            body.add_op(self.adapter("buffer_copy", [double], [slots[steps.slot[crossed]]], crossed,
                                     f"{self.producer_name(crossed)}_load"))
        weights_offset = params_offset = 0
        for layer in reused:
            kind = ENGINE_OF[type(layer.op)]
            where = f"{layer.op.name} '{layer.name}'"
            step = step_of(kind, layer.op, where)
            ins = [slots[steps.slot[v]] for v in self.activations(layer.op)]
            out = slots[steps.slot[layer.op.results[0]]]
            body.add_op(InvokeOp.build(
                operands=[ins, [out]],
                properties={"engine": SymbolRefAttr(kind), "step": ints_dict(step), "layer": StringAttr(layer.name),
                            "weights_offset": i64attr(weights_offset), "params_offset": i64attr(params_offset)},
                regions=[self.layer_payload(layer.op)]))
            w, p = ddr_sizes(kind, step)
            weights_offset, params_offset = weights_offset + w, params_offset + p
        body.add_op(self.adapter("buffer_to_stream", [slots[steps.slot[out_value]]], [out_stream], out_value,
                                 f"{self.producer_name(out_value)}_drain"))
        self.add(ScheduleOp.build(operands=[list(doubles.values()), [out_stream]],
                                  properties={"slot_size": i64attr(slot_size)}, regions=[Region(body)]))

    def producer_name(self, value: SSAValue) -> str:
        for layer in self.layers:
            if value in layer.op.results:
                return layer.name
        return self.port_name(self.func, "input")

    def slot_plan(self, reused: list[Layer], crossing: list[SSAValue], out_value: SSAValue) -> SlotPlan:
        """Feature-map slots by liveness, first fit: a map lives from the step that writes it
        (crossing maps: before the first) to the last step that reads it (the output: to
        the end); a step never writes the slot it reads. A chain of layers alternates
        between two slots: ping-pong."""
        born: dict[SSAValue, int] = {v: -1 for v in crossing}
        dies: dict[SSAValue, int] = {v: -1 for v in crossing}
        for i, layer in enumerate(reused):
            born[layer.op.results[0]] = i
            dies.setdefault(layer.op.results[0], i)
            for v in self.activations(layer.op):
                dies[v] = max(dies.get(v, i), i)
        dies[out_value] = len(reused)
        busy_until: list[int] = []
        slot: dict[SSAValue, int] = {}
        for value in sorted(born, key=lambda v: born[v]):
            free = [s for s, until in enumerate(busy_until) if until < born[value]]
            index = free[0] if free else len(busy_until)
            if not free:
                busy_until.append(0)
            busy_until[index] = dies[value]
            slot[value] = index
        types = {element(v) for v in slot}
        if len(types) != 1:
            raise UnsupportedError("the reused engines need one activation type (int8 or uint8) throughout", WHERE)
        return SlotPlan(slot, len(busy_until), types.pop())

    def engines(self, reused: list[Layer]) -> dict[str, EngineOp]:
        """One engine per kind, with the PEs of the assignment and the limits its buffers need."""
        limits: dict[str, dict[str, int]] = {}
        pes: dict[str, int] = {}
        for layer in reused:
            kind = ENGINE_OF[type(layer.op)]
            step = step_of(kind, layer.op, layer.name)
            mine = limits.setdefault(kind, {})
            if kind == "conv":
                mine["MAX_M"] = max(mine.get("MAX_M", 1), step["M"])
                mine["MAX_K"] = max(mine.get("MAX_K", 1), step["C"] // step["G"] * step["KH"] * step["KW"])
            elif kind == "pool":
                _, p = ddr_sizes(kind, step)
                mine["MAX_SETS"] = max(mine.get("MAX_SETS", 1), p // 2)
            # PEs beyond the widest layer's parallel dimension would never work.
            widest = {"conv": step.get("M", 1), "pool": step.get("C", 1)}.get(kind, step.get("N", 1))
            mine["WIDEST"] = max(mine.get("WIDEST", 1), widest)
            pes[kind] = max(pes.get(kind, 1), layer.pes)
        for kind, mine in limits.items():
            pes[kind] = min(pes[kind], mine.pop("WIDEST"))
        return {kind: EngineOp.build(properties={"sym_name": StringAttr(kind), "kind": StringAttr(kind),
                                                 "pes": i64attr(pes[kind]), "limits": ints_dict(limits[kind])})
                for kind in limits}

    # --- all of it ----------------------------------------------------------------------------

    def lower(self) -> TopOp:
        self.read_program()
        self.assign()
        readers = self.readers()
        # Processes in program order: C simulation runs a DATAFLOW region's processes one
        # after another, so a fork follows its producer.
        forks = self.wire_streams(readers)
        arg = self.func.body.block.args[0]
        for convert in self.half_ports[:1]:  # the input's: first
            self.add(convert)
        if arg in forks:
            self.add(forks[arg])
        tail = [layer for layer in self.layers if layer.place == PIPE and (layer.op, 0) not in self.stream_of
                and isinstance(layer.op, qnn.DequantizeOp)]  # the dequantize of the reused engines' result
        for layer in self.layers:
            if layer.place == PIPE and layer not in tail:
                self.add(self.pipe_kernel(layer))
                if layer.op.results[0] in forks:
                    self.add(forks[layer.op.results[0]])
        self.check_schemes()
        self.build_schedule(readers)
        for layer in tail:
            self.add(self.pipe_kernel(layer))
        for convert in self.half_ports[1:]:  # the output's: last
            self.add(convert)
        scheme = next((layer.op.scheme_name for layer in self.layers if isinstance(layer.op, qnn.Requantizes)
                       and layer.op.scheme_name), "fixed" if self.dtype == "int8" else "none")
        return TopOp.build(properties={"sym_name": StringAttr(self.func.sym_name.data),
                                       "arch": StringAttr(self.options.arch), "scheme": StringAttr(scheme)},
                           regions=[Region(self.top_block)])

    def check_schemes(self) -> None:
        schemes = {layer.op.scheme_name for layer in self.layers if isinstance(layer.op, qnn.Requantizes)
                   and layer.op.scheme_name}
        if len(schemes) > 1:
            raise UnsupportedError(f"the layers mix requantization schemes {sorted(schemes)}", WHERE)


@dataclass
class SlotPlan:
    slot: dict[SSAValue, int]
    count: int
    element: Attribute

    @property
    def values_in_slots(self) -> list[SSAValue]:
        return list(self.slot)


def lower_to_hls(module: ModuleOp, store: WeightStore, options: Options) -> None:
    """Replace the module's `@main` function by the `dataflow.top` of its accelerator."""
    funcs = [op for op in module.ops if isinstance(op, FuncOp)]
    if len(funcs) != 1:
        raise LayerloomError(f"lower-to-hls needs one function, the module has {len(funcs)}", WHERE)
    func = funcs[0]
    mapped_arch = module.attributes.get(ARCH_ATTR)
    assigned = unwrap_accel(module, func)
    if mapped_arch is not None:
        arch = mapped_arch.data if isinstance(mapped_arch, StringAttr) else ""
        if options.arch and options.arch != arch:
            raise LayerloomError(f"arch={options.arch} but the module is mapped for {arch} (assign-engines)", WHERE)
        options = replace(options, arch=arch)
    elif not options.arch:
        options = replace(options, arch="sesl")
    options = replace(options, dtype=data_type(func, options))
    top = Lowering(func, store, options, assigned if mapped_arch is not None else None).lower()
    module.body.block.insert_op_before(top, func)
    module.body.block.erase_op(func)
    for key in (TARGET_ATTR, ARCH_ATTR, BUDGET_ATTR, PLAN_ATTR):
        module.attributes.pop(key, None)


def half_weight(w: np.ndarray, handle: str) -> np.ndarray:
    """A float weight rounded to half (NumPy's float16: to nearest, ties to even)."""
    with np.errstate(over="ignore"):
        half = w.astype(np.float16)
    if not np.isfinite(half).all() and np.isfinite(w).all():
        raise UnsupportedError(f"weight '{handle}' has values beyond half's range (|w| > 65504)", WHERE)
    return half


def data_type(func: FuncOp, options: Options) -> str:
    """The accelerator's data type: the option's, checked against the program (int8 needs a
    quantized program, float and half the float one), else what the program is."""
    quantized = any(isinstance(op, qnn.QNNOp) for op in func.walk())
    dtype = options.dtype or ("int8" if quantized else "float")
    if dtype == "int8" and not quantized:
        raise LayerloomError("dtype=int8 lowers a quantized program: run quantize first (or ask for dtype=float or half)",
                             WHERE)
    if dtype != "int8" and quantized:
        raise LayerloomError(f"dtype={dtype} lowers the float program, not a quantized one (drop quantize)", WHERE)
    if dtype != "int8" and options.arch != "sesl":
        raise LayerloomError(f"the reused engines are int8 only: a {dtype} accelerator is sesl, not {options.arch}", WHERE)
    return dtype


def unwrap_accel(module: ModuleOp, func: FuncOp) -> dict[Operation, tuple[str, int]]:
    """Inline the `accel.layer`s of an assign-engines mapping into the function and return
    where each layer op runs: (pipe or reused, PEs), from its engine's role and its PEs.
    The accel.engine symbols go."""
    from dialects import accel

    engines = accel.engine_ops(module)
    assigned: dict[Operation, tuple[str, int]] = {}
    block = func.body.block
    for layer in [op for op in block.ops if isinstance(op, accel.LayerOp)]:
        role = engines[layer.engine_name].role.data
        mapper: dict[SSAValue, SSAValue] = dict(zip(layer.body.block.args, layer.inputs, strict=True))
        for inner in layer.body.block.ops:
            if isinstance(inner, accel.YieldOp):
                for result, value in zip(layer.outputs, inner.values, strict=True):
                    result.replace_all_uses_with(mapper[value])
                continue
            clone = inner.clone(value_mapper=mapper)
            block.insert_op_before(clone, layer)
            mapper.update(zip(inner.results, clone.results, strict=True))
            if not isinstance(clone, nn.WeightOp):
                assigned[clone] = (PIPE if role == "sesl" else REUSED, layer.pe_count)
        block.erase_op(layer)
    for engine in engines.values():
        engine.detach()
        engine.erase()
    for op in block.ops:
        if isinstance(op, qnn.QNNOp) and op not in assigned and assigned:
            raise UnsupportedError("the mapping leaves this layer on the host; the HLS accelerator has none",
                                   f"{op.name} '{op.layer_name}'")
    return assigned
