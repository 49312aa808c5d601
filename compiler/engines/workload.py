"""The cost model's view of a layer: its loop-nest dimensions (Timeloop calls this the
workload). Op kinds use the vocabulary of `compiler.analysis` (`conv2d`, `depthwise`,
`gemm`, `matmul`, `maxpool`, `avgpool`, `global_avgpool`, `global_maxpool`, and otherwise
the nn op's name without the prefix: `add`, `relu`, `concat`, ...).

Every layer is described as a (possibly grouped) convolution, the shape all CNN layers
share:  N images, C input channels of H x W, M output channels of E x F, an R x S window
with strides and dilations, G groups. A gemm A[rows, K] x B[K, cols] is the 1x1
convolution with C = K, M = cols and E = rows (F = 1), as SCALE-Sim maps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.ir import Operation

MAC_KINDS = frozenset({"conv2d", "depthwise", "gemm", "matmul"})
POOL_KINDS = frozenset({"maxpool", "avgpool", "global_avgpool", "global_maxpool"})
ELTWISE_KINDS = frozenset({"add", "sub", "mul", "div"})
ACTIVATION_KINDS = frozenset(
    {"relu", "clip", "leaky_relu", "sigmoid", "tanh", "hardswish", "hard_sigmoid", "softmax", "batchnorm", "lrn",
     # qnn's elementwise ops: (de)quantization, requantization, table lookups
     "quantize", "dequantize", "requantize", "lut"}
)  # fmt: skip
# Data movement: no arithmetic, only bytes moved (views move nothing at all).
DATA_KINDS = frozenset({"concat", "split", "slice", "pad", "transpose", "resize"})
VIEW_KINDS = frozenset({"reshape", "identity"})


@dataclass(frozen=True)
class Workload:
    name: str
    op: str
    in_channels: int  # C (all groups)
    out_channels: int  # M (all groups)
    out_h: int  # E
    out_w: int = 1  # F
    in_h: int = 0  # H, without padding; 0 = what the windows of E rows cover
    in_w: int = 0
    kernel_h: int = 1  # R
    kernel_w: int = 1  # S
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    batch: int = 1
    inputs: int = 1  # feature-map operands (2 for add)
    elem_bytes: int = 4  # activations
    weight_elem_bytes: int = 4
    bias: bool = False
    activation: str | None = None  # fused into the layer (conv + relu)
    pad_h: int = 0  # padding rows (top + bottom): computed on, never fetched
    pad_w: int = 0

    def __post_init__(self) -> None:
        for field_name in ("in_channels", "out_channels", "out_h", "out_w", "kernel_h", "kernel_w", "groups", "batch"):
            if getattr(self, field_name) < 1:
                raise ValueError(f"layer '{self.name}': {field_name} must be positive, got {getattr(self, field_name)}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"layer '{self.name}': groups {self.groups} must divide C {self.in_channels} and M {self.out_channels}")
        # Input extent the windows cover, less the padding, when not given.
        if self.in_h == 0:
            object.__setattr__(self, "in_h", max(1, self.window_rows(self.out_h) - self.pad_h))
        if self.in_w == 0:
            object.__setattr__(self, "in_w", max(1, self.window_cols(self.out_w) - self.pad_w))

    # --- builders ---------------------------------------------------------------------

    @classmethod
    def conv(
        cls, name: str, c: int, m: int, e: int, f: int, r: int = 1, s: int = 1, stride: int = 1, pad: int = 0,
        groups: int = 1, h: int = 0, w: int = 0, batch: int = 1, elem_bytes: int = 4, weight_elem_bytes: int | None = None,
    ) -> Workload:  # fmt: skip
        """A convolution; `pad` is the padding on each side (so 2·pad rows and columns)."""
        op = "depthwise" if groups > 1 and groups == c and c == m else "conv2d"
        return cls(name, op, c, m, e, f, h, w, r, s, stride, stride, groups=groups, batch=batch, elem_bytes=elem_bytes,
                   weight_elem_bytes=elem_bytes if weight_elem_bytes is None else weight_elem_bytes,
                   pad_h=2 * pad, pad_w=2 * pad)  # fmt: skip

    @classmethod
    def gemm(cls, name: str, rows: int, k: int, cols: int, elem_bytes: int = 4) -> Workload:
        return cls(name, "gemm", k, cols, rows, 1, rows, 1, elem_bytes=elem_bytes, weight_elem_bytes=elem_bytes)

    # --- derived sizes ----------------------------------------------------------------

    @property
    def in_channels_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_channels_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def window(self) -> int:
        return self.kernel_h * self.kernel_w

    @property
    def pixels(self) -> int:
        """Output pixels over the batch: N·E·F."""
        return self.batch * self.out_h * self.out_w

    @property
    def has_macs(self) -> bool:
        return self.op in MAC_KINDS

    @property
    def macs(self) -> int:
        """N·M·E·F·(C/G)·R·S for conv-like layers, 0 otherwise (as compiler.analysis counts)."""
        return self.pixels * self.out_channels * self.in_channels_per_group * self.window if self.has_macs else 0

    @property
    def ops(self) -> int:
        """Arithmetic operations: 2 per MAC; one per element per window tap for the rest."""
        if self.has_macs:
            return 2 * self.macs
        if self.op in POOL_KINDS:
            return self.pixels * self.out_channels * self.window
        if self.op in ELTWISE_KINDS or self.op in ACTIVATION_KINDS:
            return self.pixels * self.out_channels * max(1, self.inputs - 1)
        return 0

    @property
    def weight_count(self) -> int:
        if not self.has_macs:
            return 0
        return self.out_channels * self.in_channels_per_group * self.window + (self.out_channels if self.bias else 0)

    @property
    def input_bytes(self) -> int:
        if self.op in VIEW_KINDS:
            return 0
        return self.inputs * self.batch * self.in_channels * self.in_h * self.in_w * self.elem_bytes

    @property
    def weight_bytes(self) -> int:
        return self.weight_count * self.weight_elem_bytes

    @property
    def output_bytes(self) -> int:
        return 0 if self.op in VIEW_KINDS else self.pixels * self.out_channels * self.elem_bytes

    def window_rows(self, out_rows: int) -> int:
        """Input rows that `out_rows` consecutive output rows read (the halo included)."""
        return (out_rows - 1) * self.stride_h + (self.kernel_h - 1) * self.dilation_h + 1

    def window_cols(self, out_cols: int) -> int:
        return (out_cols - 1) * self.stride_w + (self.kernel_w - 1) * self.dilation_w + 1


# ---------------------------------------------------------------------------------------
# From nn ops
# ---------------------------------------------------------------------------------------


def workload_of(op: Operation, name: str = "") -> Workload | None:
    """The workload of an nn op, or None for ops that are not layers (nn.weight, func.*).
    Kinds and names follow compiler.analysis; `name` is used when the op has none."""
    from compiler.tensors import dtype_of
    from dialects import nn, qnn

    if isinstance(op, nn.WeightOp) or not isinstance(op, nn.NNOp) or not op.results:
        return None
    label = op.layer_name or name or op.name.partition(".")[2]
    out = nn.shape_of(op.results[0])
    eb = dtype_of(op.results[0].type).itemsize
    if isinstance(op, nn.Conv2dOp | qnn.Conv2dOp):
        x, w = nn.shape_of(op.input), nn.shape_of(op.weight)
        st, dl, group = nn.int_list(op.strides), nn.int_list(op.dilations), op.group.value.data
        pads = nn.int_list(op.pads)
        depthwise = group > 1 and w[1] == 1 and group == x[1]
        act = op.activation.data if op.activation is not None else None
        return Workload(
            label, "depthwise" if depthwise else "conv2d", x[1], w[0], out[2], out[3], x[2], x[3],
            w[2], w[3], st[0], st[1], dl[0], dl[1], group, x[0], 1, eb, dtype_of(op.weight.type).itemsize,
            op.bias is not None, act, pads[0] + pads[2], pads[1] + pads[3],
        )  # fmt: skip
    if isinstance(op, nn.GemmOp | qnn.GemmOp):
        a = nn.shape_of(op.a)
        trans_a = getattr(op, "trans_a", None)  # qnn.gemm has none
        k = a[0] if trans_a is not None and trans_a.value.data else a[1]
        act = op.activation.data if op.activation is not None else None
        return Workload(label, "gemm", k, out[1], out[0], 1, out[0], 1, elem_bytes=eb,
                        weight_elem_bytes=dtype_of(op.b.type).itemsize, bias=op.c is not None, activation=act)  # fmt: skip
    if isinstance(op, nn.MatMulOp | qnn.MatMulOp):
        a = nn.shape_of(op.a)
        k = a[-1]
        rows = math.prod(out[:-1]) if len(out) > 1 else 1
        return Workload(label, "matmul", k, out[-1] if len(nn.shape_of(op.b)) > 1 else 1, rows, 1, rows, 1,
                        elem_bytes=eb, weight_elem_bytes=dtype_of(op.b.type).itemsize)  # fmt: skip
    if isinstance(op, nn.PoolOp | qnn.PoolOp):
        x = nn.shape_of(op.input)
        kernel, st, dl, pads = (nn.int_list(attr) for attr in (op.kernel, op.strides, op.dilations, op.pads))
        return Workload(
            label, f"{op.kind.data}pool", x[1], x[1], out[2], out[3], x[2], x[3], kernel[0], kernel[1], st[0], st[1],
            dl[0], dl[1], x[1], x[0], 1, eb, eb, pad_h=pads[0] + pads[2], pad_w=pads[1] + pads[3],
        )  # fmt: skip
    if isinstance(op, nn.GlobalPoolOp | qnn.GlobalPoolOp):
        x = nn.shape_of(op.input)
        rows, cols = (x[2], math.prod(x[3:])) if len(x) > 3 else (x[2], 1)
        return Workload(label, f"global_{op.kind.data}pool", x[1], x[1], 1, 1, rows, cols, rows, cols,
                        groups=x[1], batch=x[0], elem_bytes=eb, weight_elem_bytes=eb)  # fmt: skip
    # Everything else streams over its output: channels = axis 1 (or 1), pixels = the rest.
    n = out[0] if len(out) > 1 else 1
    c = out[1] if len(out) > 1 else (out[0] if out else 1)
    rest = math.prod(out[2:]) if len(out) > 2 else 1
    kind = op.name.partition(".")[2]
    operands = [v for v in op.operands if not isinstance(v.owner, nn.WeightOp)]
    # A concat reads exactly what it writes; elementwise ops read each operand in full.
    inputs = 1 if kind in DATA_KINDS else max(1, len(operands))
    return Workload(label, kind, max(c, 1), max(c, 1), max(rest, 1), 1, max(rest, 1), 1, batch=max(n, 1),
                    inputs=inputs, elem_bytes=eb, weight_elem_bytes=eb)  # fmt: skip


def workloads(module: Operation) -> list[Workload]:
    """The workloads of every layer of a module, in program order: the layers that
    compiler.analysis lists, with its names (the ONNX node name, else `<kind>_<index>`),
    kinds, MACs and bytes (tests/test_cost_model.py checks they agree)."""
    from compiler.analysis import is_layer

    out: list[Workload] = []
    for op in module.walk():
        if not is_layer(op):
            continue
        w = workload_of(op, name=f"{op.name.partition('.')[2]}_{len(out)}")
        if w is not None:
            out.append(w)
    return out
