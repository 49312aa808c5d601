"""The HLS project of a `dataflow.top`: C++ for Vitis HLS (and g++), from jinja2 templates.

    files = emit_project(module, store, "out/", test_inputs=x, test_outputs=y, target=load_target("zcu102"))

writes, from the templates in `templates/` (this module only gathers the data they print):

| file | what |
|---|---|
| `top.h` / `top.cpp` | the top function: axis ports, m_axi DDR ports, the DATAFLOW region of kernels, the reused engines' process |
| `weights.h` | the pipeline kernels' weights, biases and tables as C initializers (on-chip ROMs) |
| `schedule.h` | the reused engines' steps (run-time shapes, slots, DDR offsets) |
| `weights.bin` | the DDR image of the reused engines: int8 weights, then int32 parameters at `DDR_PARAMS_OFFSET` |
| `tb.cpp` + `tb_data.h` | a testbench: the test inputs, the expected outputs (the reference executor's), non-zero exit on a mismatch (int8: any bit; float and half: beyond the given tolerance) |
| `predict.cpp` | `layerloom_predict(x, y, ddr_weights, ddr_params, batch)` for ctypes (backends/hls/project.py) |
| `run_hls.tcl` | Vitis HLS: csim, csynth, cosim, export |
| `project.json` | the ports (names, shapes, types, stream order) and the DDR layout, for project.py |
| `report.json` | estimated DSP, BRAM, LUT and latency per engine against the target (backends/hls/report.py) |

Ports carry feature maps in HWC order (docs/hls.md); the testbench data is written in that
order, and project.py transposes NCHW arrays to it and back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Attribute, Operation, SSAValue

from backends.hls.csim import INCLUDE_DIR
from compiler.errors import UnsupportedError
from compiler.hw.model import Target
from compiler.program import WeightStore, atomic_write_with
from compiler.quant import intmath as im
from compiler.tensors import numpy_dtype
from dialects import nn, qnn
from dialects.dataflow import BufferOp, EngineOp, InvokeOp, KernelOp, ScheduleOp, StreamOp, TopOp, element_of
from passes.lower_to_hls import transposed

TEMPLATES = Path(__file__).resolve().parent / "templates"
C_TYPES: dict[np.dtype, str] = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int32): "int32_t",
           np.dtype(np.float32): "float", np.dtype(np.float16): "layerloom::half"}
# The data type of a layer, by the C type it computes in.
DTYPE_OF_CTYPE = {"int8_t": "int8", "uint8_t": "int8", "float": "float", "layerloom::half": "half"}
# The fields of layerloom::seml::Step in order (engine_seml.h's LAYERLOOM_SEML_STEP_FIELDS).
STEP_FIELDS = (
    "kind", "in0", "in1", "out", "weights_offset", "params_offset",
    "C", "H", "W", "M", "KH", "KW", "SH", "SW", "PT", "PL", "PB", "PR", "DH", "DW", "G", "OH", "OW",
    "zx", "zw", "zy", "lo", "hi", "leaky", "avg", "count_include_pad", "first_count",
    "N", "za", "zb", "ma", "sa", "mb", "sb", "m", "s",
)
STEP_KINDS = {"conv": "kConv", "pool": "kPool", "add": "kAdd"}
STEP_KIND_VALUES = {"conv": 0, "pool": 1, "add": 2}
DDR_ALIGN = 64  # the parameter section starts on a cache line / AXI burst boundary
VALUES_PER_LINE = 24


def ctype_of(element: Attribute) -> str:
    dtype = numpy_dtype(element)
    if dtype not in C_TYPES:
        raise UnsupportedError(f"the HLS backend has no C type for {element}")
    return C_TYPES[dtype]


def c_float(value: float) -> str:
    """A float32 as an exact C++ hex-float literal."""
    return float(np.float32(value)).hex() + "f"


def c_values(values: np.ndarray) -> str:
    """The values of an array as initializer text, VALUES_PER_LINE to a line; a matrix row
    by row, each in its own braces."""
    array = np.asarray(values)
    if array.ndim == 2:
        return ",\n    ".join("{" + c_values(row) + "}" for row in array)
    flat = array.reshape(-1)
    if flat.dtype in (np.float32, np.float16):  # half values as float literals: exact
        items = [c_float(v) for v in flat.tolist()]
    else:
        items = [str(v) for v in flat.astype(np.int64).tolist()]
    lines = [", ".join(items[i:i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    return ",\n    ".join(lines)


@dataclass
class CArray:
    """A constant C array for weights.h."""

    ctype: str
    name: str
    values: np.ndarray

    @property
    def dims(self) -> str:
        return "".join(f"[{d}]" for d in self.values.shape)

    @property
    def text(self) -> str:
        return c_values(self.values)


def requant_pairs(requant: im.Requant, count: int) -> list[tuple[int, int]]:
    m = np.broadcast_to(requant.multipliers.reshape(-1), (count,))
    s = np.broadcast_to(requant.shifts.reshape(-1), (count,))
    return [(int(a), int(b)) for a, b in zip(m.tolist(), s.tolist(), strict=True)]


def stage_data(stage: im.OutputStage, sets: int | None = None) -> dict[str, object]:
    """An OutputStage's parameters for the `output_stage` macro (`sets`: how many parameter
    sets; per-tensor parameters stay one set unless a count is asked for)."""
    n = sets if sets is not None else stage.requant.shifts.size
    return {"sets": requant_pairs(stage.requant, n), "zero_point": stage.zero_point, "lo": stage.lo, "hi": stage.hi,
            "negative": requant_pairs(stage.negative, n) if stage.negative is not None else None}


def weight_of(op: Operation, index: int, store: WeightStore) -> np.ndarray:
    value = op.operands[index]
    owner = value.owner
    if not isinstance(owner, nn.WeightOp):
        raise UnsupportedError(f"operand {index} of {op.name} must be a weight")
    return store[owner.handle.data]


def weight_matrix(op: Operation, store: WeightStore) -> np.ndarray:
    """The weights as the library lays them out: one row per output (conv: the OIHW tensor
    with each output's (c, i, j) flattened; dense: N x K). A float Gemm's alpha is folded in."""
    w = weight_of(op, 1, store)
    expected = (np.int8,) if isinstance(op, qnn.QNNOp) else (np.float32, np.float16)
    if w.dtype not in expected:
        raise UnsupportedError(f"the HLS backend takes {' or '.join(np.dtype(t).name for t in expected)} weights "
                               f"here, got {w.dtype}", op_where(op))
    if isinstance(op, nn.GemmOp) and float(op.alpha.value.data) != 1.0:
        w = (w.astype(np.float64) * float(op.alpha.value.data)).astype(w.dtype)
    if isinstance(op, qnn.Conv2dOp | nn.Conv2dOp):
        return w.reshape(w.shape[0], -1)
    return w if transposed(op) else np.ascontiguousarray(w.T)


def bias_of(op: qnn.ContractionOp, channels: int, store: WeightStore) -> np.ndarray:
    bias = op.bias_operand()
    if bias is None:
        return np.zeros(channels, np.int32)
    return weight_of(op, list(op.operands).index(bias), store).astype(np.int32).reshape(channels)


def float_bias_of(op: Operation, channels: int, dtype: np.dtype, store: WeightStore) -> np.ndarray:
    """A float conv or dense layer's bias (a Gemm's C times beta), zeros without one."""
    if isinstance(op, nn.Conv2dOp):
        bias = op.bias
    elif isinstance(op, nn.GemmOp):
        bias = op.c
    else:
        bias = None
    if bias is None:
        return np.zeros(channels, dtype)
    b = np.broadcast_to(weight_of(op, list(op.operands).index(bias), store).reshape(-1), (channels,))
    if isinstance(op, nn.GemmOp) and float(op.beta.value.data) != 1.0:
        b = b.astype(np.float64) * float(op.beta.value.data)
    return np.ascontiguousarray(b).astype(dtype)


def activation_data(ops: list[Operation], ctype: str) -> dict[str, object]:
    """The float Activation stage (lo, hi, leaky, alpha as C++ initializers) of a layer's fused
    activation (conv / gemm properties, or the activation op behind it) or of an activation
    layer; the identity without one. Bounds are rounded to the layer's type first, so the
    literal is exact."""
    kind, lo, hi, alpha = "", None, None, 0.0
    for op in ops:
        if isinstance(op, nn.ReluOp):
            kind, lo = "relu", 0.0
        elif isinstance(op, nn.ClipOp):
            kind, lo, hi = "clip", _float(op.min), _float(op.max)
        elif isinstance(op, nn.LeakyReluOp):
            kind, alpha = "leaky_relu", float(op.alpha.value.data)
        elif isinstance(op, nn.Conv2dOp | nn.GemmOp) and op.activation is not None:
            kind = op.activation.data
            lo = 0.0 if kind == "relu" else _float(op.act_min) if kind == "clip" else None
            hi = _float(op.act_max) if kind == "clip" else None
            alpha = _float(op.act_alpha) or 0.0 if kind == "leaky_relu" else 0.0

    def literal(value: float | None, unbounded: str) -> str:
        if value is None:
            return f"{unbounded}layerloom::infinity<{ctype}>()"
        return c_float(float(np.float16(value)) if ctype == "layerloom::half" else value)

    return {"lo": literal(lo, "-"), "hi": literal(hi, ""), "leaky": "true" if kind == "leaky_relu" else "false",
            "alpha": literal(alpha, "")}


def _float(attr: object) -> float | None:
    return None if attr is None else float(attr.value.data)  # type: ignore[attr-defined]


def op_where(op: Operation) -> str:
    return f"{op.name} '{op.layer_name}'" if isinstance(op, nn.NNOp) and op.layer_name else op.name


# ---------------------------------------------------------------------------------------
# What the templates print
# ---------------------------------------------------------------------------------------


@dataclass
class Kernel:
    """One template call (a pipeline kernel or an adapter) and what it declares."""

    name: str
    template: str
    params: dict[str, int]
    pes: int
    ins: list[str]
    outs: list[str]
    in_type: str
    out_type: str
    dtype: str = "int8"  # what the layer computes in: int8, float or half (layerloom's stages differ)
    float_stage: str = ""  # float and half layers: activation, add, average or copy (numeric.h)
    zx: int = 0
    zw: int = 0
    stage: dict[str, object] | None = None
    stages: list[dict[str, object]] = field(default_factory=list)  # concat: one per operand
    window: bool = False


@dataclass
class Schedule:
    """The reused engines' process: its double-buffer inputs, output streams, slot arena,
    the adapters before and after its steps, the steps and the engines."""

    inputs: list[dict[str, object]]
    outputs: list[dict[str, object]]
    slots: int
    slot_size: int
    ctype: str
    before: list[Kernel]
    after: list[Kernel]
    steps: list[dict[str, object]]
    engines: list[dict[str, object]]


@dataclass
class Port:
    name: str
    ctype: str
    shape: list[int]  # the graph's tensor shape (NCHW, batch 1)
    stream_shape: list[int]  # what the stream carries per image (C, H, W or K), HWC order

    @property
    def values(self) -> int:
        return int(np.prod(self.stream_shape))


class Emitter:
    def __init__(self, top: TopOp, store: WeightStore) -> None:
        self.top = top
        self.store = store
        self.scheme = top.scheme.data
        self.arrays: list[CArray] = []
        self.names: dict[SSAValue, str] = {}
        self.ddr_weights: list[np.ndarray] = []
        self.ddr_params: list[np.ndarray] = []

    # --- names and types -------------------------------------------------------------------

    def name(self, value: SSAValue) -> str:
        owner = value.owner
        if isinstance(owner, StreamOp):
            return owner.stream_name.data
        assert isinstance(owner, BufferOp)
        return owner.buffer_name.data

    # --- kernels -----------------------------------------------------------------------------

    def kernel(self, op: KernelOp) -> Kernel:
        name = op.layer.data if op.layer is not None else op.template.data
        k = Kernel(name, op.template.data, op.template_params, op.pe_count, [self.name(v) for v in op.inputs],
                   [self.name(v) for v in op.outputs], ctype_of(element_of(op.inputs[0])),
                   ctype_of(element_of(op.outputs[0])))
        k.dtype = DTYPE_OF_CTYPE.get(k.in_type, "int8")
        layer = op.layer_op
        if layer is not None:
            k.window = k.template in ("conv2d", "conv2d_im2row", "depthwise_conv2d", "max_pool2d", "avg_pool2d")
            if isinstance(layer, qnn.QNNOp) or k.dtype == "int8":
                self.describe(k, layer)
            else:
                self.describe_float(k, op.computing_ops)
        return k

    def describe_float(self, k: Kernel, ops: list[Operation]) -> None:
        """The stage and weights of a float or half kernel: an Activation after a contraction
        or on its own, Average for average pooling, FloatAdd, Copy for concat operands."""
        layer = ops[0]
        if isinstance(layer, nn.Conv2dOp | nn.GemmOp | nn.MatMulOp):
            w = weight_matrix(layer, self.store)
            self.arrays.append(CArray(k.in_type, f"{k.name}_w", w))
            self.arrays.append(CArray(k.in_type, f"{k.name}_b", float_bias_of(layer, w.shape[0], w.dtype, self.store)))
            k.float_stage, k.stage = "activation", activation_data(ops, k.in_type)
        elif isinstance(layer, nn.ReluOp | nn.ClipOp | nn.LeakyReluOp):
            k.float_stage, k.stage = "activation", activation_data(ops, k.in_type)
        elif isinstance(layer, nn.AddOp):
            k.float_stage, k.stage = "add", activation_data(ops, k.in_type)
        elif isinstance(layer, nn.PoolOp | nn.GlobalPoolOp):
            k.float_stage = "average" if layer.kind.data == "avg" else ""
        elif isinstance(layer, nn.ConcatOp):
            k.float_stage = "copy"
        else:
            raise UnsupportedError(f"{layer.name} has no {k.dtype} HLS template", op_where(layer))

    def describe(self, k: Kernel, layer: Operation) -> None:
        """The stage, zero points and weights of an int8 pipeline kernel's layer."""
        if isinstance(layer, qnn.QuantizeOp):
            q = layer.result_quantization()
            assert q is not None
            k.stage = {"scale": c_float(q[0]), "zero_point": q[1]}
        elif isinstance(layer, qnn.DequantizeOp):
            k.stage = {"scale": c_float(float(layer.scale.value.data)), "zero_point": int(layer.zero_point.value.data)}
        elif isinstance(layer, qnn.ContractionOp):
            w = weight_matrix(layer, self.store)
            k.zx, k.zw = layer.input_quantization()[1], qnn.ival(layer.weight_zero_point) or 0
            k.stage = stage_data(layer.output_stage())
            self.arrays.append(CArray("int8_t", f"{k.name}_w", w))
            self.arrays.append(CArray("int32_t", f"{k.name}_b", bias_of(layer, w.shape[0], self.store)))
        elif isinstance(layer, nn.PoolOp | nn.GlobalPoolOp):
            pass  # max pooling left as an nn op (int8, or the float input): nothing to requantize
        elif isinstance(layer, qnn.PoolOp | qnn.GlobalPoolOp):
            k.zx = layer.input_quantization()[1]
            if layer.kind.data == "avg":
                k.stage = stage_data(layer.output_stage())
        elif isinstance(layer, qnn.AddOp):
            a, b = layer.operand_requants()
            (_, za), (_, zb) = layer.input_quantizations()
            k.stage = {"za": za, "zb": zb, "a": requant_pairs(a, 1)[0], "b": requant_pairs(b, 1)[0],
                       "out": stage_data(layer.output_stage())}
        elif isinstance(layer, qnn.RequantizeOp):
            k.stage = {"zero_point": layer.input_quantization()[1], "out": stage_data(layer.output_stage())}
        elif isinstance(layer, qnn.ConcatOp):
            k.stages = [{"zero_point": z, "out": stage_data(s)}
                        for (_, z), s in zip(layer.input_quantizations(), layer.operand_stages(), strict=True)]
        elif isinstance(layer, qnn.LutOp):
            k.stage = {"table": c_values(weight_of(layer, 1, self.store).reshape(256))}
        else:
            raise UnsupportedError(f"{layer.name} has no HLS template", op_where(layer))

    # --- the reused engines --------------------------------------------------------------

    def schedule(self, op: ScheduleOp, engines: dict[str, EngineOp]) -> Schedule:
        slots: dict[SSAValue, int] = {}
        before: list[Kernel] = []
        after: list[Kernel] = []
        steps: list[dict[str, object]] = []
        for inner in op.body.block.ops:
            if isinstance(inner, BufferOp):
                slots[inner.result] = len(slots)
            elif isinstance(inner, KernelOp):
                k = self.kernel(inner)
                # slots are rows of the arena; double buffers and streams keep their names
                k.ins = [f"fmaps[{slots[v]}]" if v in slots else n for v, n in zip(inner.inputs, k.ins, strict=True)]
                k.outs = [f"fmaps[{slots[v]}]" if v in slots else n for v, n in zip(inner.outputs, k.outs, strict=True)]
                (after if steps else before).append(k)
            elif isinstance(inner, InvokeOp):
                steps.append(self.step(inner, slots))
        return Schedule(
            inputs=[{"name": self.name(v), "ctype": ctype_of(element_of(v)), "size": _size(v)} for v in op.inputs],
            outputs=[{"name": self.name(v), "ctype": ctype_of(element_of(v))} for v in op.outputs],
            slots=len(slots), slot_size=int(op.slot_size.value.data),
            ctype=next(ctype_of(element_of(v)) for v in slots),
            before=before, after=after, steps=steps,
            engines=[{"kind": e.kind.data, "case": STEP_KINDS[e.kind.data], "pes": e.pe_count,
                      "limits": e.limit_values} for e in engines.values()],
        )

    def step(self, op: InvokeOp, slots: dict[SSAValue, int]) -> dict[str, object]:
        """A schedule row (in STEP_FIELDS order) and the layer's part of the DDR image."""
        layer = op.layer_op
        assert layer is not None
        kind = op.engine_op().kind.data
        values = op.step_values | {"kind": STEP_KIND_VALUES[kind], "weights_offset": int(op.weights_offset.value.data),
                                   "params_offset": int(op.params_offset.value.data)}
        values["in0"] = slots[op.inputs[0]]
        values["in1"] = slots[op.inputs[1]] if len(op.inputs) > 1 else 0
        values["out"] = slots[op.outputs[0]]
        weights, params = self.ddr_arrays(layer, kind, values)
        expected = (sum(a.size for a in self.ddr_weights), sum(a.size for a in self.ddr_params))
        assert expected == (values["weights_offset"], values["params_offset"]), "DDR offsets disagree with the lowering"
        self.ddr_weights.append(weights)
        self.ddr_params.append(params)
        return {"layer": op.layer.data if op.layer is not None else "", "row": [values.get(f, 0) for f in STEP_FIELDS]}

    def ddr_arrays(self, layer: Operation, kind: str, step: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """The layer's int8 weights and int32 parameters in the DDR image (engine_seml.h)."""
        if kind == "conv":
            assert isinstance(layer, qnn.ContractionOp)
            w = weight_matrix(layer, self.store)
            m = w.shape[0]
            stage = layer.output_stage()
            negative = stage.negative or im.Requant("fixed", np.zeros(1, np.int64), np.zeros(1, np.int64))
            columns = [bias_of(layer, m, self.store), *(np.broadcast_to(a.reshape(-1), (m,)) for a in (
                stage.requant.multipliers, stage.requant.shifts, negative.multipliers, negative.shifts))]
            return w.reshape(-1), np.concatenate(columns).astype(np.int32)
        if kind == "pool" and step["avg"]:
            assert isinstance(layer, qnn.QuantizedPoolOp)
            requant = layer.requant()
            sets = step["KH"] * step["KW"] - step["first_count"] + 1
            return np.zeros(0, np.int8), np.concatenate([np.broadcast_to(requant.multipliers.reshape(-1), (sets,)),
                                                         np.broadcast_to(requant.shifts.reshape(-1), (sets,))]).astype(np.int32)
        return np.zeros(0, np.int8), np.zeros(0, np.int32)

    def ddr_image(self) -> tuple[bytes, int, int]:
        """(the image, the byte offset of the parameters, parameter words)."""
        weights = np.concatenate([np.zeros(0, np.int8), *self.ddr_weights]).astype(np.int8)
        params = np.concatenate([np.zeros(0, np.int32), *self.ddr_params]).astype("<i4")
        offset = -(-max(weights.size, 1) // DDR_ALIGN) * DDR_ALIGN
        image = weights.tobytes() + bytes(offset - weights.size) + params.tobytes()
        return image, offset, int(params.size)


def _size(value: SSAValue) -> int:
    owner = value.owner
    assert isinstance(owner, BufferOp)
    return int(owner.size.value.data)


def port_of(stream: StreamOp) -> Port:
    """A port: the graph tensor is 1 x (what the stream carries per image)."""
    shape = [int(d) for d in stream.shape.get_values()]
    return Port(stream.stream_name.data, ctype_of(element_of(stream.result)), [1, *shape], shape)


def hwc(array: np.ndarray) -> np.ndarray:
    """A batch of NCHW maps (or N x K vectors) in stream order: N x (H W C) (or N x K)."""
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1)).reshape(array.shape[0], -1)
    return np.ascontiguousarray(array).reshape(array.shape[0], -1)


def environment() -> jinja2.Environment:
    """jinja2 with `${...}` for values, so C++ braces need no escaping."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        variable_start_string="${", variable_end_string="}",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined, autoescape=False,
    )


def find_top(module: ModuleOp) -> TopOp:
    tops = [op for op in module.ops if isinstance(op, TopOp)]
    if len(tops) != 1:
        raise UnsupportedError(f"expected one dataflow.top (run lower-to-hls first), found {len(tops)}")
    return tops[0]


def emit_project(
    module: ModuleOp,
    store: WeightStore,
    out: str | Path,
    *,
    test_inputs: np.ndarray | None = None,
    test_outputs: np.ndarray | None = None,
    test_tolerance: np.ndarray | None = None,
    target: Target | None = None,
    source: str = "",
) -> list[Path]:
    """Write the HLS project of the module's `dataflow.top` into `out` (created if needed);
    the testbench checks `test_inputs` (a batch, NCHW) against `test_outputs`: bit for bit,
    or within `test_tolerance` (absolute, per output value; float and half accelerators).
    Returns the files written."""
    top = find_top(module)
    emitter = Emitter(top, store)
    ops = list(top.body.block.ops)
    engines = {op.sym_name.data: op for op in ops if isinstance(op, EngineOp)}
    streams = [op for op in ops if isinstance(op, StreamOp)]
    ports = {p: next(s for s in streams if s.port is not None and s.port.data == p) for p in ("in", "out")}
    processes: list[dict[str, object]] = []
    kernels: list[Kernel] = []
    schedule: Schedule | None = None
    for op in ops:
        if isinstance(op, KernelOp):
            k = emitter.kernel(op)
            kernels.append(k)
            processes.append({"kernel": k})
        elif isinstance(op, ScheduleOp):
            schedule = emitter.schedule(op, engines)
            kernels.extend([*schedule.before, *schedule.after])
            processes.append({"schedule": schedule})
    input_port, output_port = (port_of(ports[p]) for p in ("in", "out"))
    image, params_offset, params_words = emitter.ddr_image()
    ddr = {"weights_bytes": sum(a.size for a in emitter.ddr_weights), "params_offset": params_offset,
           "params_words": params_words} if schedule is not None else None
    context = {
        "arch": top.arch.data, "scheme": top.scheme.data, "source": source,
        "input": input_port, "output": output_port, "ddr": ddr,
        "streams": [{"name": s.stream_name.data, "ctype": ctype_of(element_of(s.result)), "depth": int(s.depth.value.data)}
                    for s in streams if s.port is None],
        "doubles": [{"name": b.buffer_name.data, "ctype": ctype_of(element_of(b.result)), "size": int(b.size.value.data)}
                    for b in ops if isinstance(b, BufferOp)],
        "kernels": kernels, "processes": processes, "schedule": schedule, "arrays": emitter.arrays,
        "part": (target.part if target is not None and target.part else "xczu9eg-ffvb1156-2-e"),
        "clock_ns": (1e9 / target.clock if target is not None else 10.0),
        "step_fields": STEP_FIELDS,
    }
    tests = None
    if test_inputs is not None and test_outputs is not None:
        tests = {"batch": int(test_inputs.shape[0]), "inputs": c_values(hwc(test_inputs).astype(_np(input_port)).reshape(-1)),
                 "outputs": c_values(hwc(test_outputs).astype(_np(output_port)).reshape(-1)),
                 "tolerance": None if test_tolerance is None else c_values(
                     hwc(np.broadcast_to(test_tolerance, test_outputs.shape)).astype(np.float32).reshape(-1))}
    context["tests"] = tests
    folder = Path(out)
    (folder / "include" / "layerloom").mkdir(parents=True, exist_ok=True)
    env = environment()
    written: list[Path] = []

    def write(name: str, text: str | bytes) -> None:
        path = folder / name
        if isinstance(text, bytes):
            atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(text))
        else:
            atomic_write_with(path, lambda tmp: Path(tmp).write_text(text))
        written.append(path)

    templates = ["top.h", "top.cpp", "weights.h", "predict.cpp", "run_hls.tcl"]
    if schedule is not None:
        templates.append("schedule.h")
        write("weights.bin", image)
    if tests is not None:
        templates += ["tb.cpp", "tb_data.h"]
    for name in templates:
        write(name, env.get_template(f"{name}.j2").render(**context))
    # The library goes with the project, so that it builds anywhere (Vitis: -Iinclude).
    for header in sorted((INCLUDE_DIR / "layerloom").glob("*.h")):
        write(f"include/layerloom/{header.name}", header.read_text())
    manifest = {
        "top": "top", "arch": top.arch.data, "dtype": dtype_of_top(kernels),
        "input": vars(input_port), "output": vars(output_port), "ddr": ddr,
        "testbench": tests is not None,
    }
    write("project.json", json.dumps(manifest, indent=2) + "\n")
    if target is not None:
        from backends.hls.report import estimate

        write("report.json", json.dumps(estimate(top, target), indent=2) + "\n")
    return written


def dtype_of_top(kernels: list[Kernel]) -> str:
    """The accelerator's data type: that of its computing kernels (int8 also for the float
    boundary kernels of a quantized program)."""
    types = {k.dtype for k in kernels if k.template not in ("convert", "quantize", "dequantize")}
    return "int8" if "int8" in types or not types else types.pop()


def _np(port: Port) -> np.dtype:
    return {c: d for d, c in C_TYPES.items()}[port.ctype]
