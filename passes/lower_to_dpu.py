"""`lower-to-dpu{hw=zcu102-dpu host-suffix=false}`: a quantized (pow2) program to a DPU program.

The layers from the first int8 op on are lowered to one `dpu.program` (dialects/dpu.py)
that a `dpu.run` in `@main` calls; the graph inputs' `qnn.quantize` ops stay on the host
before it, the `qnn.dequantize` ops of the outputs after it.

- **Instruction selection** (backends/dpu/builder.py): conv2d (group 1 or depthwise) ->
  CONV / DWCONV; gemm -> CONV, whose kernel covers the whole map when the gemm reads a
  flattened C x H x W map (so a flatten costs nothing); pool and global pool -> POOL;
  add -> ELEW; concat -> placement (each producer SAVEs into its channels of the
  concatenation; an operand with another scale, or one that cannot be placed, is
  rescaled or copied by ELEW); lookup tables -> ALU lut; nearest resize by whole factors
  -> ALU upsample; reshapes that keep the bytes (or flatten into a gemm) -> nothing.
- **Tiles**: the builder's rule (the largest output tiles whose input and output fit one
  bank, rows first, double-buffered over two banks per operand). The `tile` pass's tiles
  (an engine buffer share, input channels split) do not fit the DPU's banks, which take
  all input channels of a CONV at once, so they are not used; the tile of every layer is
  recorded on its `dpu.layer` (`tile = [rows, cols, channels]`).
- **Banks**: weights and bias records in the weights and bias banks (two slots, so an
  output-channel tile's weights load while the previous one computes), feature-map tiles
  ping-ponging over banks 0-1 (inputs), 2-3 (outputs), 4-5 (second operands).
- **DDR layout**: the `weights` region holds every layer's weights in bank layout, bias
  records and tables (the program's `weights` operand, `weights.bin`); the program's
  inputs are dense HWC maps in `input`, its outputs in `output`; intermediate maps live
  in `work`, placed first-fit by liveness (two maps share bytes when no layer between
  the first write of one and the last read of the other touches both).
- **Tokens and INITs**: the builder's: each instruction gets exactly the dependency
  tokens its accesses need, and an INIT equal to the configuration in force is dropped.

A layer the DPU cannot run (not pow2 int8, grouped convolution, a kernel or tile that
does not fit its banks, a float op, ...) raises UnsupportedError naming the layer and
why. With `host-suffix=true` it runs on the host (the reference executor) instead, after
the `dpu.run`, with every layer that depends on it, as Vitis AI runs CPU subgraphs: the
boundary is the `dpu.run`'s results, and the program records the first refusal
(`host_from`). An `accel`-mapped module is accepted (its layers are unwrapped first: the
DPU program replaces the mapping).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr, SymbolRefAttr
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from backends.dpu import builder as bld
from backends.dpu.isa import DpuConfig
from backends.dpu.memory import TENSOR_ALIGN, FeatureMap, align
from compiler.errors import LayerloomError, UnsupportedError
from compiler.hw.model import Target
from compiler.program import WeightStore, weights_of
from compiler.tensors import dtype_of, tensor_type
from dialects import nn, qnn
from dialects.accel import EngineOp
from dialects.accel import LayerOp as AccelLayerOp
from dialects.dpu import ProgramOp, RunOp, feature_map_attr, program_region
from dialects.nn import WeightOp, i64attr, int_list, ints, shape_of
from passes.utils import new_weight, weight_array

WHERE = "lower-to-dpu"
DEFAULT_HW = "zcu102-dpu"
PROGRAM = "dpu"
WEIGHTS_HANDLE = "dpu.weights"

# A value's FeatureMap, given while a layer is emitted.
Maps = Callable[[SSAValue], FeatureMap]


@dataclass(frozen=True)
class LowerToDpuPass(ModulePass):
    """Lower a pow2-quantized program to a DPU program (see the module docstring)."""

    name = "lower-to-dpu"

    hw: str = ""
    host_suffix: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lower_to_dpu(op, self.hw, self.host_suffix)


def lower_to_dpu(module: ModuleOp, hw: str = "", host_suffix: bool = False) -> ProgramOp:
    """The pass as a function; returns the new dpu.program."""
    from compiler.hw import load_target
    from compiler.mapping import TARGET_ATTR

    recorded = module.attributes.get(TARGET_ATTR)
    hw = hw or (recorded.data if isinstance(recorded, StringAttr) else DEFAULT_HW)
    target = load_target(hw)
    try:
        config = DpuConfig.from_target(target)
    except LayerloomError as e:
        raise LayerloomError(e.message, e.where or WHERE) from None
    if any(isinstance(o, ProgramOp) for o in module.ops):
        raise LayerloomError(f"the module already has a dpu.program @{PROGRAM} (lower-to-dpu ran before)", WHERE)
    unwrap_mapping(module)
    func = next((o for o in module.ops if isinstance(o, FuncOp)), None)
    if func is None:
        raise LayerloomError("the module has no func.func", WHERE)
    block = func.body.block
    nodes = [o for o in block.ops if not isinstance(o, WeightOp | ReturnOp)]
    first = next((i for i, o in enumerate(nodes) if not isinstance(o, qnn.QuantizeOp)), len(nodes))
    region = nodes[first:]  # the graph inputs' quantizes stay on the host
    store = weights_of(module)

    refused: dict[Operation, UnsupportedError] = {}
    while True:
        plans, refusal = plan_layers(region, store, config, refused)
        if refusal is not None and (not plans or not host_suffix):
            raise refusal
        try:
            lowered = Lowering(config, plans, block).run()
            break
        except _Refused as e:  # emission met a limit of the banks or the encoding: plan again without it
            refused[plans[e.index].op] = e.error
    program = lowered.program_op(target, hw, config)
    if refusal is not None:  # where the host takes over, for reports
        program.attributes["host_from"] = StringAttr(f"{refusal.where}: {refusal.message}")
    rewrite(module, block, [p.op for p in plans], lowered, program)
    return program


def unwrap_mapping(module: ModuleOp) -> None:
    """Inline every accel.layer's body in its place and drop the accel.engine symbols and
    the mapping's module attributes: the DPU program supersedes the mapping."""
    for wrapper in [o for o in module.walk() if isinstance(o, AccelLayerOp)]:
        body = wrapper.body.block
        for arg, outer in zip(body.args, wrapper.operands, strict=True):
            arg.replace_all_uses_with(outer)
        *inner, last = list(body.ops)
        for o in inner:
            o.detach()
            wrapper.parent_block().insert_op_before(o, wrapper)  # type: ignore[union-attr]
        for result, value in zip(wrapper.results, last.operands, strict=True):
            result.replace_all_uses_with(value)
        Rewriter.erase_op(wrapper)
    for engine in [o for o in module.ops if isinstance(o, EngineOp)]:
        Rewriter.erase_op(engine)
    for key in [k for k in module.attributes if k.startswith("accel.")]:
        del module.attributes[key]


# ---------------------------------------------------------------------------------------
# Planning: what each layer is on the DPU
# ---------------------------------------------------------------------------------------


@dataclass
class Plan:
    """One layer of the DPU program: its name, kind, the values it reads (int8 maps) and
    writes, and how to emit it once every value has its FeatureMap. A `view` writes no
    bytes: its result is its operand's map (`flatten`: read as C x H x W by a gemm)."""

    op: Operation
    name: str
    kind: str
    reads: list[SSAValue]
    result: SSAValue
    emit: Callable[[bld.ProgramBuilder, Maps], None] | None = None
    view: bool = False
    flatten: bool = False
    concat_copies: list[bool] = field(default_factory=list)  # per operand: placed without instructions


class _Refused(Exception):
    """Layer `index` of the region cannot run on the DPU (`error` says why)."""

    def __init__(self, index: int, error: UnsupportedError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


def layer_label(op: Operation, index: int) -> str:
    name = op.layer_name if isinstance(op, nn.NNOp) else ""
    return name or f"{op.name.partition('.')[2]}_{index}"


def plan_layers(region: Sequence[Operation], store: WeightStore, config: DpuConfig,
                refused: dict[Operation, UnsupportedError]) -> tuple[list[Plan], UnsupportedError | None]:
    """Plans of the layers of `region` the DPU runs: every layer it can run that does not
    depend on one it cannot (those, and the dequantizes of its outputs, run on the host
    after the dpu.run); and why the first layer left to the host cannot run (None when the
    host only dequantizes). `refused`: layers to leave to the host, and why."""
    plans: list[Plan] = []
    names: set[str] = set()
    flattened: set[SSAValue] = set()
    on_host: set[SSAValue] = set()
    first_refusal: UnsupportedError | None = None
    for i, op in enumerate(region):
        try:
            if isinstance(op, qnn.DequantizeOp) and all(isinstance(u.operation, ReturnOp) for u in op.result.uses):
                on_host.update(op.results)  # an output's dequantize: the host's part, not a refusal
                continue
            if any(v in on_host for v in op.operands):
                raise UnsupportedError("it reads the result of a layer the host runs", layer_label(op, i))
            if op in refused:
                raise refused[op]
            plan = plan_layer(op, i, store, config, flattened)
            if any(isinstance(v.owner, nn.WeightOp) for v in plan.reads):
                # A folded constant read as a feature map has no producer to state its
                # int8 scale at the program's interface: leave such a layer to the host.
                raise UnsupportedError("it reads a constant as a feature map", layer_label(op, i))
        except LayerloomError as e:
            name = layer_label(op, i)
            error = e if isinstance(e, UnsupportedError) else UnsupportedError(
                f"the DPU cannot run {op.name}: {e.message}", name)
            first_refusal = first_refusal or UnsupportedError(error.message, error.where or name)
            on_host.update(op.results)
            continue
        base, n = plan.name, 2
        while plan.name in names:  # per-layer statistics group by name
            plan.name, n = f"{base}#{n}", n + 1
        names.add(plan.name)
        if plan.flatten:
            flattened.add(plan.result)
        plans.append(plan)
    return plans, first_refusal


def unsupported(op: Operation, index: int, reason: str) -> UnsupportedError:
    return UnsupportedError(f"the DPU cannot run {op.name}: {reason}", layer_label(op, index))


def hwc(value: SSAValue, op: Operation, index: int) -> tuple[int, int, int]:
    """The (h, w, c) map of an int8 tensor: (1, C, H, W) or (1, C)."""
    shape = shape_of(value)
    if dtype_of(value.type) != np.int8:
        raise unsupported(op, index, f"the DPU computes on int8 tensors, not {dtype_of(value.type)}")
    if len(shape) == 4 and shape[0] == 1:
        return shape[2], shape[3], shape[1]
    if len(shape) == 2 and shape[0] == 1:
        return 1, 1, shape[1]
    raise unsupported(op, index, f"a tensor of shape {shape} is not one frame's feature map (1xCxHxW or 1xC)")


def plan_layer(op: Operation, index: int, store: WeightStore, config: DpuConfig,
               flattened: set[SSAValue]) -> Plan:
    """The plan of one op; UnsupportedError when the DPU cannot run it."""
    name = layer_label(op, index)

    def fail(reason: str) -> UnsupportedError:
        return unsupported(op, index, reason)

    for v in op.operands:
        if not isinstance(v.owner, WeightOp):
            hwc(v, op, index)
            if v in flattened and not isinstance(op, qnn.GemmOp):
                raise fail("it reads a flattened map (only a gemm reads one, as a convolution over the map)")
    if isinstance(op, qnn.Conv2dOp):
        weight = _weights(op.weight, store, op, index)
        bias = weight_array(op.bias, store) if op.bias is not None else None
        layer = bld.ConvLayer.from_qnn(op, weight, bias)
        _check_kernel(layer, config, fail)
        hwc(op.result, op, index)
        return Plan(op, name, "dwconv" if layer.depthwise else "conv", [op.input], op.result,
                    lambda b, m: bld.conv(b, layer, m(op.input), m(op.result)))
    if isinstance(op, qnn.GemmOp):
        return plan_gemm(op, index, name, store, config, flattened, fail)
    if isinstance(op, qnn.PoolOp | qnn.GlobalPoolOp):
        h, w, _ = hwc(op.input, op, index)
        pool = bld.PoolLayer.from_qnn(op, (h, w))
        return plan_pool(op, name, pool, config)
    if isinstance(op, nn.PoolOp | nn.GlobalPoolOp) and op.kind.data == "max":  # max pooling of int8 (no scale change)
        h, w, _ = hwc(op.input, op, index)
        if isinstance(op, nn.GlobalPoolOp):
            pool = bld.PoolLayer("max", (h, w))
        else:
            if list(int_list(op.dilations)) != [1, 1]:
                raise fail("the DPU's POOL has no dilation")
            pool = bld.PoolLayer("max", tuple(int_list(op.kernel)), tuple(int_list(op.strides)),  # type: ignore[arg-type]
                                 tuple(int_list(op.pads)))  # type: ignore[arg-type]
        return plan_pool(op, name, pool, config)
    if isinstance(op, qnn.AddOp):
        hwc(op.result, op, index)
        add = bld.EltwiseLayer.from_qnn_add(op)
        return Plan(op, name, "eltwise", [op.lhs, op.rhs], op.result,
                    lambda b, m: bld.eltwise(b, add, m(op.lhs), m(op.rhs), m(op.result)))
    if isinstance(op, qnn.ConcatOp):
        return plan_concat(op, index, name, fail)
    if isinstance(op, qnn.LutOp):
        table = _weights(op.operands[1], store, op, index)
        x = op.operands[0]
        hwc(op.result, op, index)
        return Plan(op, name, "lut", [x], op.result, lambda b, m: bld.lut(b, table, m(x), m(op.result)))
    if isinstance(op, nn.ResizeOp):
        factor = nearest_factor(op, fail)
        return Plan(op, name, "upsample", [op.input], op.result,
                    lambda b, m: bld.upsample(b, factor, m(op.input), m(op.result)))
    if isinstance(op, nn.ReshapeOp):
        return plan_reshape(op, index, name, fail)
    if isinstance(op, qnn.DequantizeOp):
        floats = [u.operation for u in op.result.uses if not isinstance(u.operation, ReturnOp)]
        user = f"; {floats[0].name} '{layer_label(floats[0], index)}' computes in float" if floats else ""
        raise fail(f"its result is float (the host runs it{user})")
    raise fail("the DPU has no unit for it")


def _weights(value: SSAValue, store: WeightStore, op: Operation, index: int) -> np.ndarray:
    array = weight_array(value, store)
    if array is None:
        raise unsupported(op, index, "its weights are not constants (nn.weight)")
    return array


def _check_kernel(layer: bld.ConvLayer, config: DpuConfig, fail: Callable[[str], UnsupportedError]) -> None:
    """The weights of one output-channel group must fit the weights bank."""
    kh, kw = layer.kernel
    words = kh * kw * (1 if layer.depthwise else -(-layer.weights.shape[1] // config.icp))
    if words > config.bank_depth:
        raise fail(f"kernel {kh}x{kw} over {layer.weights.shape[1]} input channels needs {words} weight words "
                   f"per output group, the weights bank has {config.bank_depth}")


def plan_pool(op: Operation, name: str, pool: bld.PoolLayer, config: DpuConfig) -> Plan:
    """POOL over tiles; when one window of all channels overflows a bank (a global pool of
    a wide map), over channel slices whose window fits."""
    x, y = op.operands[0], op.results[0]
    window = pool.kernel[0] * pool.kernel[1]
    chans = shape_of(x)[1]
    fits = window * -(-chans // config.icp) <= config.bank_depth
    tile = bld.WHOLE if fits else bld.Tile(chans=config.icp * max(1, config.bank_depth // window))
    return Plan(op, name, "pool", [x], y, lambda b, m: bld.pool(b, pool, m(x), m(y), tile))


def plan_gemm(op: qnn.GemmOp, index: int, name: str, store: WeightStore, config: DpuConfig,
              flattened: set[SSAValue], fail: Callable[[str], UnsupportedError]) -> Plan:
    """A gemm as a convolution: over the 1 x 1 x K map, or with a C x H x W kernel over
    the map a flatten reads (the flatten's K index is c*H*W + h*W + w, the kernel's)."""
    source = op.a.owner.input if op.a in flattened else op.a  # type: ignore[union-attr]
    h, w, c = hwc(source, op, index)
    b_array = _weights(op.b, store, op, index)
    matrix = b_array if op.trans_b.value.data else b_array.T  # (N, K)
    n = matrix.shape[0]
    weight = np.ascontiguousarray(matrix.reshape(n, c, h, w))
    bias = weight_array(op.c, store) if op.c is not None else None
    conv = gemm_as_conv(op, (1, c, h, w), weight.shape)
    layer = bld.ConvLayer.from_qnn(conv, weight, bias)
    _check_kernel(layer, config, fail)
    return Plan(op, name, "conv", [op.a], op.result, lambda b, m: bld.conv(b, layer, m(source), m(op.result)))


def gemm_as_conv(op: qnn.GemmOp, x_shape: tuple[int, int, int, int], w_shape: tuple[int, ...]) -> qnn.Conv2dOp:
    """A detached qnn.conv2d with the gemm's quantization: an H x W kernel over the map."""
    n = w_shape[0]
    args = Block(arg_types=[tensor_type(x_shape, np.int8), tensor_type(w_shape, np.int8)]).args
    props: dict[str, Attribute] = {k: v for k, v in op.properties.items() if k != "trans_b"}
    props |= {"strides": ints([1, 1]), "pads": ints([0, 0, 0, 0]), "dilations": ints([1, 1]), "group": i64attr(1)}
    result = tensor_type((1, n, 1, 1), dtype_of(op.result.type))
    return qnn.Conv2dOp.build(operands=[args[0], args[1], []], result_types=[result], properties=props)


def plan_concat(op: qnn.ConcatOp, index: int, name: str, fail: Callable[[str], UnsupportedError]) -> Plan:
    """Channel concatenation: operands copied unchanged are placed (Lowering decides
    which can be), the others rescaled by ELEW into their channels."""
    if int(op.axis.value.data) != 1 or len(shape_of(op.result)) != 4:
        raise fail("the DPU concatenates feature maps along channels (axis 1) only")
    stages = [bld.EltwiseLayer.concat_operand(op, i) for i in range(len(op.inputs))]
    plan = Plan(op, name, "concat", list(op.inputs), op.result, concat_copies=[s is None for s in stages])
    firsts = np.cumsum([0, *(shape_of(v)[1] for v in op.inputs)])

    def emit(b: bld.ProgramBuilder, m: Maps) -> None:
        y = m(op.result)
        for i, (v, stage) in enumerate(zip(op.inputs, stages, strict=True)):
            x = m(v)
            place = y.channels(int(firsts[i]), x.c)
            if x == place:  # the producer saved it there
                continue
            copy = stage or bld.EltwiseLayer(inputs=1)
            bld.eltwise(b, copy, x, None, place)

    plan.emit = emit
    return plan


def nearest_factor(op: nn.ResizeOp, fail: Callable[[str], UnsupportedError]) -> tuple[int, int]:
    """The whole (h, w) factors of a nearest resize that repeats each pixel: checked on the
    op itself (the coordinate and rounding modes decide which pixel it picks)."""
    from backends.reference import evaluate

    x, y = shape_of(op.input), shape_of(op.result)
    if op.mode.data != "nearest" or len(x) != 4 or x[:2] != y[:2] or y[2] % x[2] or y[3] % x[3]:
        raise fail("the DPU upsamples (nearest) by whole factors only")
    factor = (y[2] // x[2], y[3] // x[3])
    for axis in (2, 3):  # the row index, then the column index, as the pixel values
        probe = np.broadcast_to(_codes(x[axis]).reshape([-1 if a == axis else 1 for a in range(4)]), x)
        expected = np.repeat(np.repeat(probe, factor[0], axis=2), factor[1], axis=3)
        if not np.array_equal(evaluate(op, [np.ascontiguousarray(probe)])[0], expected):
            raise fail(f"its {op.coordinate_mode.data} / {op.nearest_mode.data} nearest resize does not repeat "
                       f"each pixel {factor[0]}x{factor[1]} times")
    return factor


def _codes(n: int) -> np.ndarray:
    return (np.arange(n) % 256 - 128).astype(np.int8)


def plan_reshape(op: nn.ReshapeOp, index: int, name: str, fail: Callable[[str], UnsupportedError]) -> Plan:
    """A reshape that keeps the map's bytes ((1, C, 1, 1) <-> (1, C)) is a view; one that
    flattens (1, C, H, W) to (1, C*H*W) is a view that only a gemm reads."""
    src, dst = shape_of(op.input), shape_of(op.result)
    h, w, c = hwc(op.input, op, index)
    if dst in ((1, c, h, w), (1, c)) and (dst == src or h * w == 1):
        return Plan(op, name, "view", [op.input], op.result, view=True)
    if len(src) == 4 and dst == (1, h * w * c):
        return Plan(op, name, "view", [op.input], op.result, view=True, flatten=True)
    raise fail(f"a reshape from {src} to {dst} reorders the bytes of the map")


# ---------------------------------------------------------------------------------------
# DDR placement and emission
# ---------------------------------------------------------------------------------------


@dataclass
class Lowered:
    """What the lowering made: the built program, the layer of each instruction, the maps
    of the program's inputs and outputs, region sizes and each layer's kind and tile."""

    built: bld.BuiltProgram
    inputs: list[SSAValue]
    outputs: list[SSAValue]
    maps: dict[SSAValue, FeatureMap]
    work: int
    plans: list[Plan]

    def program_op(self, target: Target, hw: str, config: DpuConfig) -> ProgramOp:
        """The dpu.program: a dpu.layer per layer with instructions, recording its kind, its
        tile (rows, cols, channels) and the cost model's cycles for that tile."""
        from compiler.engines.dpu import program_cycles

        grouped = dict(group_by_layer(self.built))
        tiles = [tile_of(grouped.get(plan.name, [])) for plan in self.plans]
        model = program_cycles([(p.op, t, self.copied_channels(p)) for p, t in zip(self.plans, tiles, strict=True)],
                               target)
        layers = []
        for plan, tile, cycles in zip(self.plans, tiles, model, strict=True):  # also views, placed concats
            instructions = grouped.get(plan.name, [])
            attrs: dict[str, Attribute] = {"kind": StringAttr(plan.kind),
                                           "output": _map_attr(plan.result, self.maps[plan.result])}
            if tile is not None:
                attrs["tile"] = ints(list(tile))
                if cycles is not None:
                    attrs["model_cycles"] = i64attr(cycles)
            layers.append((plan.name, attrs, instructions))
        props: dict[str, Attribute] = {
            "sym_name": StringAttr(PROGRAM), "hw": StringAttr(hw), "arch": StringAttr(config.name),
            **{k: i64attr(getattr(config, k)) for k in ("pp", "icp", "ocp", "bank_num", "bank_depth", "cores")},
            "weights": i64attr(len(self.built.weights)), "work": i64attr(self.work),
            "inputs": _map_list(self.inputs, self.maps), "outputs": _map_list(self.outputs, self.maps),
        }
        return ProgramOp.build(properties=props, regions=[program_region(layers)])

    def copied_channels(self, plan: Plan) -> int:
        """Channels of a concatenation that ELEW copies (its other operands' producers
        SAVE them in place); 0 for other layers."""
        if plan.kind != "concat":
            return 0
        y, first, copied = self.maps[plan.result], 0, 0
        for v in plan.reads:
            chans = shape_of(v)[1]
            if self.maps[v] != y.channels(first, chans):
                copied += chans
            first += chans
        return copied


def _map_attr(value: SSAValue, m: FeatureMap) -> Attribute:
    return feature_map_attr(m.reg, m.offset, m.shape, (m.row_stride, m.col_stride), scale_of(value))


def _map_list(values: Sequence[SSAValue], maps: dict[SSAValue, FeatureMap]) -> Attribute:
    return ArrayAttr([_map_attr(v, maps[v]) for v in values])


def group_by_layer(built: bld.BuiltProgram) -> list[tuple[str, list]]:
    """(layer, its instructions) in program order, END left out (each layer's
    instructions are contiguous: the builder emits a layer at a time)."""
    groups: list[tuple[str, list]] = []
    for ins, name in zip(built.instructions, built.layers, strict=True):
        if ins.mnemonic == "END":
            continue
        if not groups or groups[-1][0] != name:
            groups.append((name, []))
        groups[-1][1].append(ins)
    return groups


COMPUTE = {"CONV": "oc", "DWCONV": "chans", "POOL": "chans", "ELEW": "chans", "ALU": "chans"}


def tile_of(instructions: Sequence) -> tuple[int, int, int] | None:
    """(rows, cols, channels) of a layer's largest output tile, from its compute instructions."""
    compute = [i for i in instructions if i.mnemonic in COMPUTE]
    if not compute:
        return None
    return (max(i.out_rows for i in compute), max(i.out_cols for i in compute),
            max(i[COMPUTE[i.mnemonic]] for i in compute))


def scale_of(value: SSAValue) -> float:
    """The int8 scale of a value: what its producer states, looking through ops that keep
    the quantization (reshapes, max pooling and nearest resizes of int8)."""
    owner = value.owner
    while isinstance(owner, (*qnn.LAYOUT_OPS, nn.PoolOp, nn.GlobalPoolOp, nn.ResizeOp)):
        owner = owner.operands[0].owner  # type: ignore[union-attr]  # an op's operand, never a block's
    q = owner.result_quantization() if isinstance(owner, qnn.QNNOp) else None
    if q is None:
        raise LayerloomError(f"no quantization is known for a value of {getattr(owner, 'name', 'an argument')}", WHERE)
    return q[0]


class Lowering:
    """Places the region's values in DDR and emits the plans with a ProgramBuilder."""

    def __init__(self, config: DpuConfig, plans: Sequence[Plan], block: Block) -> None:
        self.config = config
        self.plans = list(plans)
        self.region = [p.op for p in self.plans]
        self.block = block
        inside = set(self.region)
        self.defined = {p.result: i for i, p in enumerate(self.plans)}
        self.uses: dict[SSAValue, list[int]] = {}
        self.inputs: list[SSAValue] = []
        for i, p in enumerate(self.plans):
            for v in p.reads:
                self.uses.setdefault(v, []).append(i)
                if v not in self.defined and v not in self.inputs:
                    self.inputs.append(v)
        self.outputs = [p.result for p in self.plans
                        if any(u.operation not in inside for u in p.result.uses)]

    def run(self) -> Lowered:
        maps, work = self.place()
        b = bld.ProgramBuilder(self.config)
        for i, p in enumerate(self.plans):
            if p.emit is None:
                continue
            with b.layer(p.name):
                try:
                    p.emit(b, lambda v: maps[v])
                except LayerloomError as e:  # a limit of the banks or the encoding
                    error = e if isinstance(e, UnsupportedError) else UnsupportedError(
                        f"the DPU cannot run {self.region[i].name}: {e}", p.name)
                    error.where = p.name
                    raise _Refused(i, error) from None
        built = b.finish()
        return Lowered(built, self.inputs, self.outputs, maps, work, self.plans)

    # -- placement ---------------------------------------------------------------------

    def place(self) -> tuple[dict[SSAValue, FeatureMap], int]:
        """Every value's map: inputs dense in `input`; each concat operand that is copied
        and written by one layer of its own inside the concatenation's map; views as their
        operand; the remaining maps (roots) in `output` if the host reads any of their
        values, else first-fit by liveness in `work`."""
        parent: dict[SSAValue, tuple[SSAValue, int]] = {}  # value -> (holder, first channel)
        for p in self.plans:
            if p.view:
                parent[p.result] = (p.reads[0], 0)
        concat_uses: dict[SSAValue, int] = {}
        for p in self.plans:
            if p.kind == "concat":
                for v in p.reads:
                    concat_uses[v] = concat_uses.get(v, 0) + 1
        for p in self.plans:
            if p.kind != "concat":
                continue
            first = 0
            for v, copied in zip(p.reads, p.concat_copies, strict=True):
                producer = self.defined.get(v)
                own = producer is not None and not self.plans[producer].view and v not in parent
                if copied and own and concat_uses[v] == 1:
                    parent[v] = (p.result, first)
                first += shape_of(v)[1]

        def root(v: SSAValue) -> SSAValue:
            while v in parent:
                v = parent[v][0]
            return v

        maps: dict[SSAValue, FeatureMap] = {}
        offset = 0
        for v in self.inputs:
            maps[v] = FeatureMap.dense("input", align(offset, TENSOR_ALIGN), *self.shape(v))
            offset = maps[v].offset + maps[v].nbytes
        # Lifetimes of the roots: from the first write of any value they hold to the last read.
        first_def: dict[SSAValue, int] = {}
        last_use: dict[SSAValue, int] = {}
        to_output: set[SSAValue] = set()
        for v, i in self.defined.items():
            r = root(v)
            if r in self.inputs:
                continue
            first_def[r] = min(first_def.get(r, i), i)
            last_use[r] = max(last_use.get(r, i), *self.uses.get(v, [i]))
            if v in self.outputs:
                to_output.add(r)
        out_offset = 0
        placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last) in work
        for r in sorted(first_def, key=lambda r: first_def[r]):
            h, w, c = self.shape(r)
            size = h * w * c
            if r in to_output:
                maps[r] = FeatureMap.dense("output", align(out_offset, TENSOR_ALIGN), h, w, c)
                out_offset = maps[r].offset + size
                continue
            at = first_fit(placed, size, first_def[r], last_use[r])
            placed.append((at, at + size, first_def[r], last_use[r]))
            maps[r] = FeatureMap.dense("work", at, h, w, c)
        for v in self.defined:
            if v not in maps:
                maps[v] = self.map_of(v, parent, maps)
        return maps, max((end for _, end, _, _ in placed), default=0)

    def map_of(self, v: SSAValue, parent: dict[SSAValue, tuple[SSAValue, int]],
               maps: dict[SSAValue, FeatureMap]) -> FeatureMap:
        holder, first = parent[v]
        m = maps[holder] if holder in maps else self.map_of(holder, parent, maps)
        maps[holder] = m
        if self.plans[self.defined[v]].view:
            return m
        return m.channels(first, shape_of(v)[1])

    def shape(self, v: SSAValue) -> tuple[int, int, int]:
        s = shape_of(v)
        return (s[2], s[3], s[1]) if len(s) == 4 else (1, 1, s[1])


def first_fit(placed: Sequence[tuple[int, int, int, int]], size: int, first: int, last: int) -> int:
    """The lowest 64-byte aligned offset where `size` bytes live during layers
    [first, last] without touching a placed block alive at an overlapping time."""
    busy = sorted((a, b) for a, b, alive, dead in placed if alive <= last and first <= dead)
    at = 0
    for a, b in busy:
        if at + size <= a:
            break
        at = max(at, align(b, TENSOR_ALIGN))
    return at


# ---------------------------------------------------------------------------------------
# Rewriting @main
# ---------------------------------------------------------------------------------------


def rewrite(module: ModuleOp, block: Block, region: Sequence[Operation], lowered: Lowered, program: ProgramOp) -> None:
    """Put the program at the top of the module; in @main, one dpu.run (and the weights
    region as an nn.weight) in place of the region's ops; drop weights nobody uses."""
    store = weights_of(module)
    module.body.block.insert_op_before(program, module.body.block.first_op)  # type: ignore[arg-type]
    anchor = region[0]
    blob = np.frombuffer(lowered.built.weights, np.uint8).copy()
    weights = new_weight(store, blob, WEIGHTS_HANDLE, StringAttr(PROGRAM))
    run = RunOp.build(operands=[[*lowered.inputs, weights.result]],
                      result_types=[[v.type for v in lowered.outputs]],
                      properties={"program": SymbolRefAttr(PROGRAM)})
    block.insert_op_before(weights, anchor)
    block.insert_op_before(run, anchor)
    for old, new in zip(lowered.outputs, run.results, strict=True):
        old.replace_all_uses_with(new)
    for op in reversed(region):
        Rewriter.erase_op(op)
    for op in [o for o in block.ops if isinstance(o, WeightOp) and not o.result.uses]:
        Rewriter.erase_op(op)
