"""`quantize`: post-training int8 quantization of an `nn` program into `qnn`.

    quantize{scheme=fixed calibrator=minmax per-channel=true percentile=99.99 keep-float=fc calib="data.npz"}

1. Activations are fused into conv2d / gemm (as `fuse-activation` does), and a relu or clip
   that is the only user of an add is fused into it.
2. Every op is planned: *int* (lowered to a qnn op: conv2d, gemm, matmul, add, concat,
   average pooling, and sigmoid / tanh / hard-sigmoid / hard-swish / unfused relu, clip,
   leaky relu as `qnn.lut`), *layout* (reshape, transpose, slice, split, identity, pad,
   nearest resize and max pooling of an int8 tensor stay what they are, on int8), or
   *float* (everything else, the layers named in `keep-float`, and ops the integer form
   cannot express).
3. The float program runs over the calibration batches (`compiler.quant.calibrate`) to
   find the range of every tensor an int op reads or writes; the calibrator turns it into
   scales and zero points (docs/quantization.md section 1).
4. The ops are rewritten in program order. An int op's float operand gets a
   `qnn.quantize` (the first input's quantize), a float op's (or the function result's)
   int8 operand a `qnn.dequantize` (the last dequantize); weights are quantized at
   compile time (symmetric int8, per output channel or per tensor), biases to int32.

From Python: `quantize(program, calibration, **options) -> Program` (a new program; the
argument is left as it was), with `calibration` an iterable of {input name: array} dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.dialects.func import ReturnOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass, PassPipeline
from xdsl.pattern_rewriter import PatternRewriteWalker

from compiler.errors import LayerloomError
from compiler.program import Program, WeightStore, weights_of
from compiler.quant import calibrate
from compiler.quant import intmath as im
from compiler.quant.lowering import (
    DEFAULT_WEIGHT_SCALES,
    TABLE_OPS,
    WEIGHT_SCALES,
    Activation,
    Lowerer,
    QParams,
    choose_params,
    gemm_bias,
    pow2_limited_scales,
    quantize_weights,
    weight_scales,
)
from compiler.tensors import tensor_type
from dialects import nn, qnn
from dialects.nn import f64attr, i64attr
from passes.fuse_activation import FuseActivation
from passes.utils import new_weight, sole_user, weight_array

# Layout ops that carry an int8 tensor unchanged (their result has the operand's quantization).
LAYOUT_OPS: tuple[type[Operation], ...] = (
    nn.ReshapeOp, nn.TransposeOp, nn.SliceOp, nn.SplitOp, nn.IdentityOp, nn.PadOp, nn.ResizeOp,
)
INT, LAYOUT, FLOAT, ABSORBED = "int", "layout", "float", "absorbed"


@dataclass(frozen=True)
class Options:
    scheme: str = "fixed"
    calibrator: str = "mse"
    per_channel: bool = True
    percentile: float = calibrate.DEFAULT_PERCENTILE
    keep_float: frozenset[str] = field(default_factory=frozenset)
    weight_scales: str | None = None  # None: the scheme's default (DEFAULT_WEIGHT_SCALES)
    bias_correction: bool = True

    @property
    def weight_method(self) -> str:
        return self.weight_scales or DEFAULT_WEIGHT_SCALES.get(self.scheme, "max")

    def check(self) -> None:
        if self.scheme not in im.SCHEMES:
            raise LayerloomError(f"unknown scheme '{self.scheme}' (one of {', '.join(im.SCHEMES)})", "quantize")
        if self.calibrator not in calibrate.CALIBRATORS:
            raise LayerloomError(f"unknown calibrator '{self.calibrator}' (one of {', '.join(calibrate.CALIBRATORS)})",
                                 "quantize")
        if not 50.0 < self.percentile <= 100.0:
            raise LayerloomError(f"percentile {self.percentile} must lie in (50, 100]", "quantize")
        if self.weight_scales is not None and self.weight_scales not in WEIGHT_SCALES:
            raise LayerloomError(f"unknown weight-scales '{self.weight_scales}' (one of {', '.join(WEIGHT_SCALES)})",
                                 "quantize")


@dataclass(frozen=True)
class QuantizePass(ModulePass):
    """Post-training int8 quantization with calibration data from `calib` (an .npz keyed
    by input name; `layerloom compile --calib FILE` sets it)."""

    name = "quantize"

    scheme: str = "fixed"
    calibrator: str = "mse"
    per_channel: bool = True
    percentile: float = calibrate.DEFAULT_PERCENTILE
    keep_float: tuple[str, ...] = ()
    calib: str | None = None
    weight_scales: str | None = None
    bias_correction: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not self.calib:
            raise LayerloomError('quantize needs calibration data: calib="FILE.npz" in the pipeline, '
                                 "or --calib FILE for layerloom compile", "quantize")
        options = Options(self.scheme, self.calibrator, self.per_channel, self.percentile, frozenset(self.keep_float),
                          self.weight_scales, self.bias_correction)
        quantize_module(op, weights_of(op), calibrate.load_calibration(self.calib), options, self.calib)


def quantize(
    program: Program,
    calibration: Iterable[Mapping[str, ArrayLike]],
    *,
    scheme: str = "fixed",
    calibrator: str = "mse",
    per_channel: bool = True,
    percentile: float = calibrate.DEFAULT_PERCENTILE,
    keep_float: Sequence[str] | str = (),
    weight_scales: str | None = None,
    bias_correction: bool = True,
) -> Program:
    """The int8 version of `program` (a new Program; `program` is not changed), calibrated
    on `calibration`: an iterable of {input name: array} batches."""
    names = keep_float.split(",") if isinstance(keep_float, str) else list(keep_float)
    options = Options(scheme, calibrator, per_channel, percentile, frozenset(n for n in names if n), weight_scales,
                      bias_correction)
    result = program.clone()
    quantize_module(result.module, result.weights, calibration, options)
    return result


def with_calibration(pipeline: PassPipeline, path: str | Path) -> PassPipeline:
    """The pipeline with `calib` set on every quantize pass that has none (`--calib`);
    LayerloomError if it has no quantize pass or the file does not exist."""
    if not any(isinstance(p, QuantizePass) for p in pipeline.passes):
        raise LayerloomError("--calib is given but the pipeline has no quantize pass", "--calib")
    if not Path(path).is_file():
        raise LayerloomError("calibration file not found" if not Path(path).exists() else "not a file", str(path))
    passes = tuple(replace(p, calib=str(path)) if isinstance(p, QuantizePass) and not p.calib else p
                   for p in pipeline.passes)
    return PassPipeline(passes, pipeline.callback)


def quantize_module(module: ModuleOp, store: WeightStore, calibration: Iterable[Mapping[str, ArrayLike]],
                    options: Options, where: str = "calibration") -> None:
    """Quantize `module` in place (its weights in `store`)."""
    from backends.reference.executor import main_function

    options.check()
    PatternRewriteWalker(FuseActivation()).rewrite_module(module)
    main = main_function(module)
    data = calibrate.batches(calibrate.input_specs(main), calibration, where)
    Quantizer(main.body.block, store, options).run(module, data)


# ---------------------------------------------------------------------------------------
# The rewrite
# ---------------------------------------------------------------------------------------


def layer_name(op: Operation) -> str:
    return op.layer_name if isinstance(op, nn.NNOp) else ""


def scales_along(scales: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Per-channel scales (or one) shaped to broadcast along `axis` of an ndim-d weight."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(scales, np.float64).reshape(shape)


class Quantizer(Lowerer):
    """Plans and rewrites the ops of one function body."""

    def __init__(self, block: Block, store: WeightStore, options: Options) -> None:
        self.block, self.store, self.options = block, store, options
        self.scheme = options.scheme  # type: ignore[misc]
        self.kind: dict[Operation, str] = {}
        self.fused: dict[Operation, Operation] = {}  # add -> the relu / clip folded into it
        self.int_values: set[SSAValue] = set()  # values that are int8 after the rewrite
        self.ranges: dict[SSAValue, tuple[float, float]] = {}
        self.int_of: dict[SSAValue, SSAValue] = {}  # old value -> its int8 version
        self.float_of: dict[SSAValue, SSAValue] = {}  # old int value -> its dequantized version
        self.params: dict[SSAValue, QParams] = {}  # int8 value -> its quantization
        self.patch_means: dict[Operation, calibrate.PatchMean] = {}  # conv / gemm -> its mean input (bias correction)

    # -- planning ------------------------------------------------------------------------

    def run(self, module: ModuleOp, data: list[calibrate.Batch]) -> None:
        self.plan()
        wanted = self.needed_ranges()
        if self.options.bias_correction:
            self.patch_means = self.bias_corrected_ops()
        means = [(op.operands[0], mean) for op, mean in self.patch_means.items()]
        stats = calibrate.observe(module, self.store, wanted, data, self.options.calibrator, means)
        # The program's inputs and outputs keep their whole range: the calibrator clips
        # intermediate tensors only (clipping the largest logit changes the prediction;
        # clipping the input saves nothing, its quantize is float).
        edges = set(self.block.args) | (set(self.block.last_op.operands) if self.block.last_op is not None else set())
        for value, s in zip(wanted, stats, strict=True):
            calibrator = "minmax" if value in edges else self.options.calibrator
            self.ranges[value] = s.range(calibrator, self.options.percentile, self.scheme)
        self.rewrite()

    def plan(self) -> None:
        names = {layer_name(op) for op in self.block.ops}
        unknown = sorted(set(self.options.keep_float) - names)
        if unknown:
            raise LayerloomError(f"keep-float names {', '.join(repr(n) for n in unknown)}, which no op has", "quantize")
        for op in self.block.ops:
            if isinstance(op, nn.WeightOp | ReturnOp) or self.kind.get(op) == ABSORBED:
                continue
            if layer_name(op) in self.options.keep_float:
                kind = FLOAT
            elif self.lowerable(op):
                kind = INT
                act = self.fusable_activation(op)
                if act is not None:
                    self.fused[op] = act
                    self.kind[act] = ABSORBED
            elif self.carries_int(op):
                kind = LAYOUT
            else:
                kind = FLOAT
            self.kind[op] = kind
            if kind in (INT, LAYOUT):
                self.int_values.update(self.output_op(op).results)

    def bias_corrected_ops(self) -> dict[Operation, calibrate.PatchMean]:
        """The int conv2d / gemm ops with constant weights, each with an empty PatchMean
        of its input."""
        means: dict[Operation, calibrate.PatchMean] = {}
        for op, kind in self.kind.items():
            if kind != INT:
                continue
            if isinstance(op, nn.Conv2dOp):
                kh, kw = nn.shape_of(op.weight)[2:]
                geometry = ((kh, kw), tuple(nn.int_list(op.strides)), tuple(nn.int_list(op.pads)),
                            tuple(nn.int_list(op.dilations)))
                means[op] = calibrate.PatchMean(geometry)  # type: ignore[arg-type]
            elif isinstance(op, nn.GemmOp) and self.weight(op.b) is not None:
                means[op] = calibrate.PatchMean()
        return means

    def output_op(self, op: Operation) -> Operation:
        """The op whose result the int op computes (an add's fused activation)."""
        return self.fused.get(op, op)

    def fusable_activation(self, op: Operation) -> Operation | None:
        if not isinstance(op, nn.AddOp):
            return None
        user = sole_user(op.result)
        if isinstance(user, nn.ReluOp | nn.ClipOp) and layer_name(user) not in self.options.keep_float:
            return user
        return None

    def weight(self, value: SSAValue | None) -> np.ndarray | None:
        return weight_array(value, self.store)

    def lowerable(self, op: Operation) -> bool:
        """Whether `op` has a qnn form (checked on shapes and constant operands)."""
        if not all(self.is_float_tensor(v) for v in op.operands) or not all(self.is_float_tensor(r) for r in op.results):
            return False  # integer arithmetic (shapes, indices) stays what it is
        if isinstance(op, nn.Conv2dOp):
            w = self.weight(op.weight)
            k = int(np.prod(nn.shape_of(op.weight)[1:]))
            return w is not None and (op.bias is None or self.weight(op.bias) is not None) and k <= im.MAX_REDUCTION
        if isinstance(op, nn.GemmOp):
            if int(op.trans_a.value.data) or nn.shape_of(op.a)[1] > im.MAX_REDUCTION:
                return False
            n = nn.gemm_output_shape(nn.shape_of(op.a), nn.shape_of(op.b), False, bool(op.trans_b.value.data))[1]
            b_const = self.weight(op.b) is not None
            if not b_const and float(op.alpha.value.data) != 1.0:
                return False
            if op.c is None:
                return True
            c = self.weight(op.c)
            try:
                return c is not None and gemm_bias(c, n) is not None
            except ValueError:
                return False
        if isinstance(op, nn.MatMulOp):
            return nn.shape_of(op.a)[-1] <= im.MAX_REDUCTION
        if isinstance(op, nn.AddOp | nn.ConcatOp):
            return True
        if isinstance(op, nn.PoolOp):
            return op.kind.data == "avg"
        if isinstance(op, nn.GlobalPoolOp):
            return op.kind.data == "avg"
        if isinstance(op, nn.LeakyReluOp):
            return 0.0 < float(op.alpha.value.data) < 1.0
        return type(op) in TABLE_OPS

    def is_float_tensor(self, value: SSAValue) -> bool:
        return nn.is_float(nn.element_type_of(value))

    def carries_int(self, op: Operation) -> bool:
        """A layout op (or max pooling) whose operand will be int8."""
        if not op.operands or op.operands[0] not in self.int_values:
            return False
        if isinstance(op, nn.ResizeOp):
            return op.mode.data == "nearest"
        if isinstance(op, nn.PoolOp | nn.GlobalPoolOp):
            return op.kind.data == "max"
        return isinstance(op, LAYOUT_OPS)

    def needed_ranges(self) -> list[SSAValue]:
        """Float values whose range calibration must find: what int ops read (unless it is
        int8 already or a weight) and what they write."""
        wanted: dict[SSAValue, None] = {}
        for op, kind in self.kind.items():
            if kind != INT:
                continue
            for v in self.activation_operands(op):
                if v not in self.int_values and self.weight(v) is None:
                    wanted[v] = None
            wanted[self.output_op(op).results[0]] = None
        return list(wanted)

    def activation_operands(self, op: Operation) -> list[SSAValue]:
        if isinstance(op, nn.Conv2dOp):
            return [op.input]
        if isinstance(op, nn.GemmOp):
            return [op.a] + ([op.b] if self.weight(op.b) is None else [])
        if isinstance(op, nn.MatMulOp):
            return [op.a] + ([op.b] if self.weight(op.b) is None else [])
        if isinstance(op, nn.AddOp | nn.ConcatOp):
            return list(op.operands)
        return [op.operands[0]]

    # -- rewriting -----------------------------------------------------------------------

    def rewrite(self) -> None:
        old_ops: list[Operation] = []
        for op in list(self.block.ops):
            kind = self.kind.get(op)
            if isinstance(op, ReturnOp) or kind == FLOAT:
                op.operands = [self.as_float(v) for v in op.operands]
                continue
            if kind is None:  # weights
                continue
            old_ops.append(op)
            if kind == INT:
                self.lower_op(op)
            elif kind == LAYOUT:
                self.relayout(op)
        for op in reversed(old_ops):
            self.block.erase_op(op)
        for op in list(self.block.ops):
            if isinstance(op, nn.WeightOp) and not op.result.uses:
                self.block.erase_op(op)

    def insert(self, new: Operation, before: Operation, name: StringAttr | None = None) -> Operation:
        if name is not None:
            new.properties.setdefault("name", name)
        self.block.insert_op_before(new, before)
        return new

    def value_params(self, value: SSAValue) -> QParams:
        lo, hi = self.ranges[value]
        return choose_params(lo, hi, self.scheme)

    def as_int(self, value: SSAValue, before: Operation) -> SSAValue:
        """The int8 version of an old value: its rewritten form, a compile-time quantized
        weight, or a `qnn.quantize` right after its definition (cached)."""
        if value in self.int_of:
            return self.int_of[value]
        array = self.weight(value)
        if array is not None:
            q = choose_params(float(array.min(initial=0.0)), float(array.max(initial=0.0)), self.scheme)
            owner = value.owner
            name = owner.properties.get("name") if isinstance(owner, Operation) else None
            w = new_weight(self.store, q.quantize(array), "quantized", name if isinstance(name, StringAttr) else None)
            self.insert(w, before)
            result: SSAValue = w.result
        else:
            q = self.value_params(value)
            props = q.result_props() | {"name": StringAttr(f"{self.value_name(value)}.quantize")}
            op = qnn.QuantizeOp.build(operands=[value], result_types=[self.int_type(value, q)], properties=props)
            owner = value.owner
            if isinstance(owner, Operation):
                self.block.insert_op_after(op, owner)
            else:
                self.block.insert_op_before(op, self.block.first_op)  # type: ignore[arg-type]
            result = op.results[0]
        self.int_of[value] = result
        self.params[result] = q
        return result

    def as_float(self, value: SSAValue) -> SSAValue:
        """The float version of an old value: itself, or a `qnn.dequantize` of its int8
        form right after that is defined (cached)."""
        if value not in self.int_values:
            return value
        if value not in self.float_of:
            q_value = self.int_of[value]
            q = self.params[q_value]
            t = value.type
            assert isinstance(t, TensorType)
            props = {"scale": f64attr(q.scale), "zero_point": i64attr(q.zero_point),
                     "name": StringAttr(f"{self.value_name(value)}.dequantize")}
            op = qnn.DequantizeOp.build(operands=[q_value], result_types=[t], properties=props)
            owner = q_value.owner
            assert isinstance(owner, Operation)
            self.block.insert_op_after(op, owner)
            self.float_of[value] = op.results[0]
        return self.float_of[value]

    def value_name(self, value: SSAValue) -> str:
        owner = value.owner
        if isinstance(owner, Operation):
            return layer_name(owner) or owner.name
        from compiler.program import io_names

        func = self.block.parent_op()
        names = io_names(getattr(func, "arg_attrs", None), "input", len(self.block.args))
        return names[value.index] if hasattr(value, "index") else "input"  # type: ignore[attr-defined]

    def int_type(self, value: SSAValue, q: QParams) -> TensorType:
        return tensor_type(nn.shape_of(value), q.element_type)

    def define(self, old: SSAValue, new: SSAValue, q: QParams) -> None:
        self.int_of[old] = new
        self.params[new] = q

    def lower_op(self, op: Operation) -> None:
        name = op.properties.get("name")
        assert name is None or isinstance(name, StringAttr)
        out = self.value_params(self.output_op(op).results[0])
        try:
            new = self.lower(op, out, self.fused_activation(op))
        except LayerloomError as e:
            raise LayerloomError(f"{op.name} '{layer_name(op)}': {e}", "quantize") from None
        self.insert(new, op, name)
        self.define(self.output_op(op).results[0], new.results[0], out)

    # -- the Lowerer's questions ---------------------------------------------------------

    def int_operand(self, value: SSAValue, before: Operation) -> tuple[SSAValue, QParams]:
        x = self.as_int(value, before)
        return x, self.params[x]

    def quantized_weight(self, value: SSAValue, axis: int, x: QParams, out: QParams,
                         factor: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
        w = self.weight(value)
        assert w is not None
        w = w * np.float32(factor) if factor != 1.0 else w
        scales = self.weight_scales(w, axis, x, out)
        return quantize_weights(w, scales, axis), scales, 0

    def constant(self, value: SSAValue | None) -> np.ndarray | None:
        return self.weight(value)

    def corrected_bias(self, op: Operation, bias: np.ndarray | None, weights: np.ndarray, scales: np.ndarray,
                       axis: int, factor: float = 1.0) -> np.ndarray | None:
        """Bias correction (docs/quantization.md section 11): the bias plus the expected shift
        of each output that quantizing the weights causes, E[(W - s_w * w_q) x] per output
        channel, over the calibration data's mean input window."""
        mean = self.patch_means[op].mean if op in self.patch_means else None
        if mean is None:
            return bias
        w = self.weight(op.operands[1])
        assert w is not None
        error = np.asarray(w, np.float64) * np.float32(factor) - weights * scales_along(scales, weights.ndim, axis)
        if isinstance(op, nn.Conv2dOp):
            group = int(op.group.value.data)
            m, per_group = error.shape[:2]
            windows = mean.reshape(group, per_group, *mean.shape[1:])  # each group's input channels
            shift = np.einsum("gmcij,gcij->gm", error.reshape(group, m // group, *error.shape[1:]), windows).reshape(m)
        else:
            shift = mean @ (error.T if axis == 0 else error)  # weights (N, K) when trans_b, else (K, N)
        return shift if bias is None else bias + shift

    def add_weight(self, array: np.ndarray, before: Operation) -> SSAValue:
        name = before.properties.get("name")
        assert name is None or isinstance(name, StringAttr)
        return self.insert(new_weight(self.store, array, f"{name.data if name else 'w'}.q", name), before).results[0]

    def weight_scales(self, w: np.ndarray, axis: int, x: QParams, out: QParams) -> np.ndarray:
        scales = weight_scales(w, axis, self.options.per_channel, self.scheme, self.options.weight_method)
        return pow2_limited_scales(scales, x, out) if self.scheme == "pow2" else scales

    def fused_activation(self, op: Operation) -> Activation | None:
        act = self.fused.get(op)
        if isinstance(act, nn.ReluOp):
            return Activation("relu")
        if isinstance(act, nn.ClipOp):
            return Activation("clip", lo=qnn.fval(act.min), hi=qnn.fval(act.max))
        return None

    def relayout(self, op: Operation) -> None:
        """The same layout op (or max pooling) on the int8 operand; results keep its quantization."""
        x = self.as_int(op.operands[0], op)
        q = self.params[x]
        props = dict(op.properties)
        types = [tensor_type(nn.shape_of(r), q.element_type) for r in op.results]
        if isinstance(op, nn.PoolOp):
            new: Operation = qnn.PoolOp.build(operands=[x], result_types=types, properties=props | q.input_props()
                                              | q.result_props())
        elif isinstance(op, nn.GlobalPoolOp):
            new = qnn.GlobalPoolOp.build(operands=[x], result_types=types, properties=props | q.input_props()
                                         | q.result_props())
        else:
            if isinstance(op, nn.PadOp):  # the padding value, quantized (0.0 becomes the zero point)
                props["value"] = f64attr(float(q.quantize(np.array([op.value.value.data], np.float32))[0]))
            assert isinstance(op, nn.NNOp)
            new = type(op).build(operands=[x], result_types=[types] if isinstance(op, nn.SplitOp) else types,
                                 properties=props)
        self.insert(new, op)
        for old, result in zip(op.results, new.results, strict=True):
            self.define(old, result, q)


__all__ = ["Options", "QuantizePass", "quantize", "quantize_module", "with_calibration"]
