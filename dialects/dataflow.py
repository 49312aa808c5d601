"""The `dataflow` dialect: a dataflow accelerator built from the HLS template library.

The target level of the HLS backend (`lower-to-hls` produces it, `backends/hls/emit.py`
turns it into C++). xDSL already registers a dialect named `hls`, so ours is `dataflow`.

    dataflow.top @main {arch = "hybrid", scheme = "fixed"} {
      %x = dataflow.stream {name = "x", port = "in", shape = array<i64: 3, 8, 8>, depth = 2 : i64} : !dataflow.stream<f32>
      %q = dataflow.stream {name = "x.quantize", shape = array<i64: 3, 8, 8>, depth = 2 : i64} : !dataflow.stream<i8>
      dataflow.kernel "quantize" %x -> %q {layer = "x.quantize", pes = 1 : i64, params = {N = 192 : i64}}
          : !dataflow.stream<f32> -> !dataflow.stream<i8> {
      ^0(%a : tensor<1x3x8x8xf32>):
        %r = qnn.quantize %a {...} : (tensor<1x3x8x8xf32>) -> tensor<1x3x8x8xi8>
        dataflow.yield %r : tensor<1x3x8x8xi8>
      }
      ...                                  (one dataflow.kernel per pipeline layer)
      %d = dataflow.buffer {name = "conv2.in", kind = "double", size = 512 : i64} : !dataflow.buffer<i8>
      dataflow.kernel "stream_to_buffer" %s2 -> %d {...} : ...
      dataflow.engine @conv {kind = "conv", pes = 16 : i64, limits = {...}}
      dataflow.schedule %d -> %y8 {slots = 2 : i64, slot_size = 512 : i64} : ... {
        %f0 = dataflow.buffer {name = "slot0", kind = "slot", size = 512 : i64} : !dataflow.buffer<i8>
        dataflow.invoke @conv %d -> %f0 {layer = "conv2", step = {...}} : ... { payload }
        ...
        dataflow.kernel "buffer_to_stream" %fk -> %y8 {...} : ...
      }
      ...
    }

- `dataflow.stream`: an `hls::stream` FIFO, one value per beat, feature maps in HWC order.
  `shape` is the per-image tensor shape (C, H, W, or K for a vector); `port` marks the
  top function's axis ports.
- `dataflow.buffer`: an on-chip array. `double`: a ping-pong (PIPO) buffer between two
  processes of the DATAFLOW region (the pipeline and the reused engines of the hybrid
  architecture); `slot`: one feature-map slot of the reused engines' arena, used
  alternately by consecutive layers (ping-pong).
- `dataflow.kernel`: one instance of a template of the library (`template`, its compile-time
  `params`, `pes`) -- a pipeline (SESL) engine, or an adapter (fork, stream <-> buffer).
- `dataflow.engine`: a reused (SEML) engine, one per kind (conv, pool, add), a symbol with
  its PEs and the compile-time `limits` its run-time-shaped template needs.
- `dataflow.schedule`: the process that runs the reused engines: its `dataflow.invoke`s run
  one after another, each a layer with its run-time shape (`step`) and its weights and
  parameters at `weights_offset` / `params_offset` in the DDR image.

A kernel's or invoke's `body` (its payload) is isolated from above: tensor block arguments,
the layer's `nn.weight`s, the layer op (`qnn` for int8 accelerators, `nn` for float and half
ones), optionally the activation fused behind it (float layers: `nn.relu`, `nn.clip`,
`nn.leaky_relu`), and `dataflow.yield` -- what the emitter needs to write the weights and
the output stage, with the layer op's own accessors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xdsl.dialects.builtin import (
    DenseArrayBase,
    DictionaryAttr,
    IntegerAttr,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, ParametrizedAttribute, Region, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    IRDLOption,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    opt_prop_def,
    opt_region_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import IsolatedFromAbove, IsTerminator, NoTerminator, SymbolOpInterface, SymbolTable
from xdsl.utils.exceptions import VerifyException

from dialects.nn import WeightOp, i64attr, int_list

ARCHS = ("sesl", "seml", "hybrid")
PORTS = ("in", "out")
BUFFER_KINDS = ("double", "slot")
SCHEMES = ("pow2", "fixed", "none")  # none: a float or half accelerator (nothing requantizes)
FUSED_ACTIVATIONS = ("nn.relu", "nn.clip", "nn.leaky_relu")
ENGINE_KINDS = ("conv", "pool", "add")


@irdl_attr_definition
class StreamType(ParametrizedAttribute, TypeAttribute):
    """`!dataflow.stream<T>`: an hls::stream<T>."""

    name = "dataflow.stream"
    element_type: Attribute


@irdl_attr_definition
class BufferType(ParametrizedAttribute, TypeAttribute):
    """`!dataflow.buffer<T>`: an on-chip array of T."""

    name = "dataflow.buffer"
    element_type: Attribute


def element_of(value: SSAValue) -> Attribute:
    t = value.type
    assert isinstance(t, StreamType | BufferType)
    return t.element_type


def int_of(attr: Attribute | None) -> int:
    assert isinstance(attr, IntegerAttr), attr
    return int(attr.value.data)


def dict_ints(attr: DictionaryAttr) -> dict[str, int]:
    return {k: int_of(v) for k, v in attr.data.items()}


def ints_dict(values: dict[str, int]) -> DictionaryAttr:
    return DictionaryAttr({k: i64attr(v) for k, v in values.items()})


class DataflowOp(IRDLOperation):
    """Common to the ops: properties in the attribute dictionary, and a checker that names the op."""

    irdl_options: tuple[IRDLOption, ...] = (ParsePropInAttrDict(),)

    def what(self) -> str:
        return self.name

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise VerifyException(f"{self.what()}: {message}")


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Ends a payload with the layer op's results."""

    name = "dataflow.yield"
    assembly_format = "($values^ `:` type($values))? attr-dict"
    traits = traits_def(IsTerminator())
    values = var_operand_def()

    def __init__(self, values: Sequence[SSAValue]) -> None:
        super().__init__(operands=[list(values)])


@irdl_op_definition
class StreamOp(DataflowOp):
    """An hls::stream FIFO; `port` ("in" / "out") makes it an axis port of the top function."""

    name = "dataflow.stream"
    assembly_format = "attr-dict `:` type($result)"

    stream_name = prop_def(StringAttr, prop_name="name")
    shape = prop_def(DenseArrayBase)
    depth = prop_def(IntegerAttr)
    port = opt_prop_def(StringAttr)
    result = result_def(StreamType)

    def what(self) -> str:
        return f"dataflow.stream '{self.stream_name.data}'"

    @property
    def values(self) -> int:
        """Values per image."""
        return _product(int_list(self.shape))

    def verify_(self) -> None:
        shape = int_list(self.shape)
        self.check(len(shape) >= 1 and min(shape) >= 1, f"shape {list(shape)} must be positive sizes")
        self.check(int_of(self.depth) >= 1, f"depth must be positive, got {int_of(self.depth)}")
        self.check(self.port is None or self.port.data in PORTS, f"port must be one of {', '.join(PORTS)}")


@irdl_op_definition
class BufferOp(DataflowOp):
    """An on-chip array of `size` values: a double (ping-pong) buffer between two processes,
    or a feature-map slot of the reused engines."""

    name = "dataflow.buffer"
    assembly_format = "attr-dict `:` type($result)"

    buffer_name = prop_def(StringAttr, prop_name="name")
    kind = prop_def(StringAttr)
    size = prop_def(IntegerAttr)
    result = result_def(BufferType)

    def what(self) -> str:
        return f"dataflow.buffer '{self.buffer_name.data}'"

    def verify_(self) -> None:
        self.check(self.kind.data in BUFFER_KINDS, f"kind '{self.kind.data}' is not one of {', '.join(BUFFER_KINDS)}")
        self.check(int_of(self.size) >= 1, f"size must be positive, got {int_of(self.size)}")


def _product(values: Sequence[int]) -> int:
    n = 1
    for v in values:
        n *= v
    return n


class ReadsWrites(DataflowOp):
    """An op that reads its `inputs` and writes its `outputs` (streams or buffers)."""

    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    inputs = var_operand_def()
    outputs = var_operand_def()

    def verify_channels(self) -> None:
        for v in (*self.inputs, *self.outputs):
            self.check(isinstance(v.type, StreamType | BufferType), f"operands must be streams or buffers, got {v.type}")
        self.check(len(self.outputs) >= 1, "writes nothing")


class Payload(ReadsWrites):
    """An op whose `body` holds the layer it computes: tensor arguments (one per input),
    the layer's weights, the layer op, optionally the activation fused behind it, and
    `dataflow.yield`."""

    layer = opt_prop_def(StringAttr)

    def what(self) -> str:
        return f"{self.name} '{self.layer.data}'" if self.layer is not None else self.name

    @property
    def payload_region(self) -> Region | None:
        region = self.regions[0] if self.regions else None
        return region if region is not None and region.blocks else None

    @property
    def computing_ops(self) -> list[Operation]:
        """The payload's ops that are neither weights nor the yield: the layer, then its
        fused activation if any."""
        region = self.payload_region
        if region is None:
            return []
        return [op for op in region.block.ops if not isinstance(op, WeightOp | YieldOp)]

    @property
    def layer_op(self) -> Operation | None:
        """The payload's layer op."""
        ops = self.computing_ops
        return ops[0] if ops else None

    @property
    def fused_activation(self) -> Operation | None:
        """The activation fused behind the layer op (float layers), if any."""
        ops = self.computing_ops
        return ops[1] if len(ops) == 2 else None

    def verify_payload(self) -> None:
        region = self.payload_region
        if region is None:
            return
        block = region.block
        self.check(len(block.args) == len(self.inputs), f"the payload takes {len(block.args)} tensors for "
                                                         f"{len(self.inputs)} inputs")
        self.check(all(isinstance(a.type, TensorType) for a in block.args), "payload arguments must be tensors")
        layers = self.computing_ops
        self.check(len(layers) in (1, 2), f"the payload holds {len(layers)} layer ops, not one (and its activation)")
        if len(layers) == 2:
            activation = layers[1]
            self.check(activation.name in FUSED_ACTIVATIONS and list(activation.operands) == list(layers[0].results),
                       f"{activation.name} cannot be fused behind {layers[0].name}: a fused activation is one of "
                       f"{', '.join(FUSED_ACTIVATIONS)} on the layer's result")
        last = block.last_op
        self.check(isinstance(last, YieldOp) and list(last.operands) == list(layers[-1].results),
                   "the payload must end with dataflow.yield of the layer's (or its activation's) results")


@irdl_op_definition
class KernelOp(Payload):
    """One instance of a template of the library: a pipeline engine (with the layer as its
    payload) or an adapter (fork, stream_to_buffer, buffer_to_stream: no payload)."""

    name = "dataflow.kernel"
    assembly_format = (
        "$template $inputs `->` $outputs attr-dict-with-keyword `:` type($inputs) `->` type($outputs) ($body^)?"
    )
    traits = traits_def(IsolatedFromAbove())

    template = prop_def(StringAttr)
    params = prop_def(DictionaryAttr)
    pes = prop_def(IntegerAttr)
    engine = opt_prop_def(StringAttr)
    body = opt_region_def("single_block")

    @property
    def template_params(self) -> dict[str, int]:
        return dict_ints(self.params)

    @property
    def pe_count(self) -> int:
        return int_of(self.pes)

    def verify_(self) -> None:
        self.verify_channels()
        self.check(bool(self.template.data), "empty template name")
        self.check(all(isinstance(v, IntegerAttr) for v in self.params.data.values()), "params must be integers")
        self.check(self.pe_count >= 1, f"pes must be positive, got {self.pe_count}")
        self.verify_payload()


@irdl_op_definition
class EngineOp(DataflowOp):
    """A reused (SEML) engine: one run-time-shaped template instance that the schedule
    invokes for each of its layers. `limits`: the compile-time maxima its buffers are
    sized by (the largest of its layers)."""

    name = "dataflow.engine"
    assembly_format = "$sym_name attr-dict"
    traits = traits_def(SymbolOpInterface())

    sym_name = prop_def(SymbolNameConstraint())
    kind = prop_def(StringAttr)
    pes = prop_def(IntegerAttr)
    limits = prop_def(DictionaryAttr)

    def what(self) -> str:
        return f"dataflow.engine @{self.sym_name.data}"

    @property
    def pe_count(self) -> int:
        return int_of(self.pes)

    @property
    def limit_values(self) -> dict[str, int]:
        return dict_ints(self.limits)

    def verify_(self) -> None:
        self.check(self.kind.data in ENGINE_KINDS, f"kind '{self.kind.data}' is not one of {', '.join(ENGINE_KINDS)}")
        self.check(self.pe_count >= 1, f"pes must be positive, got {self.pe_count}")
        self.check(all(isinstance(v, IntegerAttr) for v in self.limits.data.values()), "limits must be integers")


# The layer ops each reused engine kind runs.
ENGINE_OPS: dict[str, tuple[str, ...]] = {
    "conv": ("qnn.conv2d", "qnn.gemm", "qnn.matmul"),
    "pool": ("qnn.pool", "qnn.global_pool", "nn.pool", "nn.global_pool"),
    "add": ("qnn.add",),
}


@irdl_op_definition
class InvokeOp(Payload):
    """One layer run on a reused engine: `step` is its run-time descriptor (shapes, slots,
    zero points, clamps), its weights and parameters start at `weights_offset` /
    `params_offset` of the DDR image."""

    name = "dataflow.invoke"
    assembly_format = "$engine $inputs `->` $outputs attr-dict-with-keyword `:` type($inputs) `->` type($outputs) $body"
    traits = traits_def(IsolatedFromAbove())

    engine = prop_def(SymbolRefAttr)
    step = prop_def(DictionaryAttr)
    weights_offset = prop_def(IntegerAttr)
    params_offset = prop_def(IntegerAttr)
    body = region_def("single_block")

    @property
    def step_values(self) -> dict[str, int]:
        return dict_ints(self.step)

    def engine_op(self) -> EngineOp:
        try:
            found = SymbolTable.lookup_symbol(self, self.engine)
        except ValueError:
            found = None
        self.check(isinstance(found, EngineOp), f"@{self.engine.root_reference.data} is not a dataflow.engine")
        assert isinstance(found, EngineOp)
        return found

    def verify_(self) -> None:
        self.verify_channels()
        self.check(all(isinstance(v.type, BufferType) for v in (*self.inputs, *self.outputs)),
                   "a reused engine reads and writes buffers")
        self.check(all(isinstance(v, IntegerAttr) for v in self.step.data.values()), "step values must be integers")
        self.check(int_of(self.weights_offset) >= 0 and int_of(self.params_offset) >= 0, "offsets must not be negative")
        self.verify_payload()
        engine = self.engine_op()
        layer = self.layer_op
        self.check(layer is not None and layer.name in ENGINE_OPS[engine.kind.data],
                   f"engine @{engine.sym_name.data} ({engine.kind.data}) cannot run "
                   f"{layer.name if layer is not None else 'an empty payload'}")


@irdl_op_definition
class ScheduleOp(ReadsWrites):
    """The process that runs the reused engines: the body's invokes (and its final
    buffer_to_stream kernel) run in order, on the feature-map slots it declares."""

    name = "dataflow.schedule"
    assembly_format = "$inputs `->` $outputs attr-dict-with-keyword `:` type($inputs) `->` type($outputs) $body"
    traits = traits_def(NoTerminator())

    slot_size = prop_def(IntegerAttr)
    body = region_def("single_block")

    def verify_(self) -> None:
        self.verify_channels()
        allowed = (BufferOp, InvokeOp, KernelOp)
        ports = set(self.inputs) | set(self.outputs)
        for op in self.body.block.ops:
            self.check(isinstance(op, allowed), f"{op.name} cannot be part of a schedule")
            for v in op.operands:
                inside = isinstance(v.owner, Operation) and v.owner.parent_block() is self.body.block
                self.check(inside or v in ports, "the schedule uses a value that is not one of its operands")
            if isinstance(op, BufferOp):
                self.check(op.kind.data == "slot", "a schedule declares slot buffers only")
                self.check(int_of(op.size) <= int_of(self.slot_size), f"slot of {int_of(op.size)} values exceeds slot_size")


@irdl_op_definition
class TopOp(DataflowOp):
    """The accelerator's top function: streams, buffers, kernels, engines and the schedule
    in a DATAFLOW region. `arch`: sesl, seml or hybrid; `scheme`: the requantization scheme
    (`none` for a float or half accelerator)."""

    name = "dataflow.top"
    assembly_format = "$sym_name attr-dict-with-keyword $body"
    traits = traits_def(SymbolOpInterface(), SymbolTable(), NoTerminator())

    sym_name = prop_def(SymbolNameConstraint())
    arch = prop_def(StringAttr)
    scheme = prop_def(StringAttr)
    body = region_def("single_block")

    def what(self) -> str:
        return f"dataflow.top @{self.sym_name.data}"

    def verify_(self) -> None:
        self.check(self.arch.data in ARCHS, f"arch '{self.arch.data}' is not one of {', '.join(ARCHS)}")
        self.check(self.scheme.data in SCHEMES, f"scheme '{self.scheme.data}' is not one of {', '.join(SCHEMES)}")
        streams = [op for op in self.body.walk() if isinstance(op, StreamOp)]
        ports = {p: [s for s in streams if s.port is not None and s.port.data == p] for p in PORTS}
        self.check(len(ports["in"]) >= 1 and len(ports["out"]) >= 1, "needs an input and an output port")
        for s in streams:
            self.check_single_reader_writer(s)

    def check_single_reader_writer(self, stream: StreamOp) -> None:
        """A FIFO has one producer and one consumer (the ports: only the inside end). The
        schedule counts for the ops inside it."""
        readers = writers = 0
        for use in stream.result.uses:
            user = use.operation
            if isinstance(user, ReadsWrites) and user.parent_op() is self:
                if use.index < len(user.inputs):
                    readers += 1
                else:
                    writers += 1
        port = stream.port.data if stream.port is not None else None
        want_readers, want_writers = (1, 0) if port == "in" else (0, 1) if port == "out" else (1, 1)
        self.check(readers == want_readers and writers == want_writers,
                   f"stream '{stream.stream_name.data}' has {writers} writers and {readers} readers, "
                   f"expected {want_writers} and {want_readers}")


def payload(layer: Operation, replace: dict[SSAValue, WeightOp] | None = None, *,
            activation: Operation | None = None, retype: Callable[[Attribute], Attribute] | None = None) -> Region:
    """A payload region around a copy of `layer` (and of the `activation` fused behind it):
    its non-weight operands become block arguments in order, its weights are cloned into
    the body (or the weight op that `replace` gives for that operand: a re-laid-out or
    converted copy). `retype` maps the types of the arguments and results (half layers:
    f32 tensors to f16)."""
    replace = replace or {}
    same: Callable[[Attribute], Attribute] = lambda t: t  # noqa: E731
    weights: dict[SSAValue, WeightOp] = {}
    for v in layer.operands:
        if v in replace:
            weights[v] = replace[v]
        elif isinstance(v.owner, WeightOp):
            weights[v] = v.owner.clone()
    retype = retype or same
    arguments = list(dict.fromkeys(v for v in layer.operands if v not in weights))
    block = Block(arg_types=[retype(v.type) for v in arguments])
    mapper: dict[SSAValue, SSAValue] = dict(zip(arguments, block.args, strict=True))
    for v, w in weights.items():
        block.add_op(w)
        mapper[v] = w.results[0]
    inner = layer
    for op in [layer] if activation is None else [layer, activation]:
        inner = type(op).create(operands=[mapper[v] for v in op.operands],
                                result_types=[retype(r.type) for r in op.results],
                                properties=dict(op.properties), attributes=dict(op.attributes))
        block.add_op(inner)
        mapper.update(zip(op.results, inner.results, strict=True))
    block.add_op(YieldOp(inner.results))
    return Region(block)


DATAFLOW = Dialect(
    "dataflow",
    [TopOp, StreamOp, BufferOp, KernelOp, EngineOp, ScheduleOp, InvokeOp, YieldOp],
    [StreamType, BufferType],
)
