"""The `accel` dialect: layers mapped onto engines (docs/dialects/accel.md).

The mapped level of layerloom. Engines are module-level symbols; each mapped layer is an
`accel.layer` that wraps one `nn` (or `qnn`) op together with its weights and says which
engine runs it, with how many PEs, in which slot of the engine's schedule, cut into
which tiles, in which loop order, and where its tensors live:

    accel.engine @seml {kind = "seml", role = "seml", pes = 1024 : i64, stage = 0 : i64}
    func.func @main(%x: tensor<1x3x32x32xf32>) -> tensor<1x8x32x32xf32> {
      %y = accel.layer @seml(%x) {pes = 1024 : i64, slot = 0 : i64, tile = array<i64: 8, 3, 16, 32>,
                                  order = "output", input = "dram", weights = "dram", output = "dram"}
          : (tensor<1x3x32x32xf32>) -> tensor<1x8x32x32xf32> {
      ^0(%a : tensor<1x3x32x32xf32>):
        %w = nn.weight "conv1.w" : tensor<8x3x3x3xf32>
        %c = nn.conv2d %a, %w {name = "conv1", ...} : (...) -> tensor<1x8x32x32xf32>
        accel.yield %c : tensor<1x8x32x32xf32>
      }
      func.return %y : tensor<1x8x32x32xf32>
    }

The body is isolated from above: feature maps come in as block arguments (the layer's
operands), weights are `nn.weight` ops inside it. So a mapped layer is self-contained --
what a lowering needs to emit one engine invocation -- and the analysis, the cost model
and the reference executor see the same nn op as before mapping.

assign-engines sets engine, pes and slot; tile sets tile and order; plan-memory sets the
placements `input` / `weights` / `output` ("dram", "onchip" at an offset, or "stream":
a FIFO between pipeline engines), their offsets, and `buffer_offset`: where a pipeline
layer's line buffer lives (the reused engine's tile buffers are on its accel.engine).
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    DenseArrayBase,
    DictionaryAttr,
    IntegerAttr,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import IsolatedFromAbove, IsTerminator, SymbolOpInterface, SymbolTable
from xdsl.utils.exceptions import VerifyException

from dialects.nn import WeightOp, i64attr, int_list, ints

ROLES = ("seml", "sesl")  # how an engine is used: reused by many layers / one pipeline stage
PLACES = ("dram", "onchip", "stream")
TENSORS = ("input", "weights", "output")


@irdl_op_definition
class EngineOp(IRDLOperation):
    """An engine instance: a module-level symbol. `kind` is the engine plugin, `role` how
    the mapping uses it (`seml`: reused by many layers; `sesl`: one pipeline stage),
    `pes` its MAC units (per instance), `count` identical instances (DPU cores), `stage`
    its place in the pipeline, `target_engine` the target's engine block it instantiates
    and `params` that block's parameters. plan-memory adds `buffer_offset` /
    `buffer_bytes`: the engine's own on-chip buffers (tiles, line buffers)."""

    name = "accel.engine"
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$sym_name attr-dict"
    traits = traits_def(SymbolOpInterface())

    sym_name = prop_def(SymbolNameConstraint())
    kind = prop_def(StringAttr)
    role = prop_def(StringAttr)
    pes = prop_def(IntegerAttr)
    stage = prop_def(IntegerAttr)
    count = opt_prop_def(IntegerAttr)
    target_engine = opt_prop_def(StringAttr)
    params = opt_prop_def(DictionaryAttr)
    buffer_offset = opt_prop_def(IntegerAttr)
    buffer_bytes = opt_prop_def(IntegerAttr)

    @property
    def engine_name(self) -> str:
        return self.sym_name.data

    @property
    def pe_count(self) -> int:
        return int(self.pes.value.data)

    @property
    def instances(self) -> int:
        return 1 if self.count is None else int(self.count.value.data)

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise VerifyException(f"accel.engine @{self.engine_name}: {message}")

    def verify_(self) -> None:
        self.check(bool(self.kind.data), "empty kind")
        self.check(self.role.data in ROLES, f"role '{self.role.data}' is not one of {', '.join(ROLES)}")
        self.check(self.pe_count >= 1, f"pes must be positive, got {self.pe_count}")
        self.check(int(self.stage.value.data) >= 0, "stage must not be negative")
        self.check(self.instances >= 1, f"count must be positive, got {self.instances}")
        self.check((self.buffer_offset is None) == (self.buffer_bytes is None), "buffer_offset and buffer_bytes go together")
        self.check_slots()

    def check_slots(self) -> None:
        """Two layers of one engine must not share a schedule slot."""
        top = self.parent_op()
        if top is None:
            return
        seen: dict[int, str] = {}
        for op in top.walk():
            # A layer without its slot (or engine) is reported by its own verifier, which may run later.
            if (isinstance(op, LayerOp) and "slot" in op.properties and "engine" in op.properties
                    and op.engine.root_reference.data == self.engine_name):
                slot, name = op.slot_index, op.layer_name
                self.check(slot not in seen, f"layers '{seen.get(slot)}' and '{name}' share slot {slot}")
                seen[slot] = name
        if self.role.data == "sesl":
            self.check(len(seen) == 0 or 0 in seen, "a pipeline engine's first layer takes slot 0")


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Ends an `accel.layer` body with the layer's results."""

    name = "accel.yield"
    assembly_format = "($values^ `:` type($values))? attr-dict"
    traits = traits_def(IsTerminator())
    values = var_operand_def()

    def __init__(self, values: Sequence[SSAValue]) -> None:
        super().__init__(operands=[list(values)])


@irdl_op_definition
class LayerOp(IRDLOperation):
    """One layer mapped on an engine: its feature maps are the operands (and body block
    arguments); the body holds the layer's weights, the layer op and `accel.yield`."""

    name = "accel.layer"
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$engine `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs) $body"
    traits = traits_def(IsolatedFromAbove())

    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    body = region_def("single_block")

    engine = prop_def(SymbolRefAttr)
    pes = prop_def(IntegerAttr)
    slot = prop_def(IntegerAttr)
    tile = opt_prop_def(DenseArrayBase)
    order = opt_prop_def(StringAttr)
    input = opt_prop_def(StringAttr)
    weights = opt_prop_def(StringAttr)
    output = opt_prop_def(StringAttr)
    weights_offset = opt_prop_def(IntegerAttr)
    output_offset = opt_prop_def(IntegerAttr)
    buffer_offset = opt_prop_def(IntegerAttr)

    # --- building ------------------------------------------------------------------------

    @staticmethod
    def wrap(op: Operation, engine: str, pes: int, slot: int) -> LayerOp:
        """A new accel.layer around `op` (detached from its block): its non-weight operands
        become the layer's operands; its weights are cloned into the body."""
        inputs: list[SSAValue] = []
        for v in op.operands:
            if not isinstance(v.owner, WeightOp) and v not in inputs:
                inputs.append(v)
        block = Block(arg_types=[v.type for v in inputs])
        mapper: dict[SSAValue, SSAValue] = dict(zip(inputs, block.args, strict=True))
        for v in op.operands:
            if isinstance(v.owner, WeightOp) and v not in mapper:
                weight = v.owner.clone()
                block.add_op(weight)
                mapper[v] = weight.results[0]
        inner = op.clone(value_mapper=mapper)
        block.add_op(inner)
        block.add_op(YieldOp(inner.results))
        return LayerOp.build(
            operands=[inputs],
            result_types=[[r.type for r in op.results]],
            regions=[Region(block)],
            properties={"engine": SymbolRefAttr(engine), "pes": i64attr(pes), "slot": i64attr(slot)},
        )

    # --- reading -------------------------------------------------------------------------

    @property
    def inner(self) -> Operation:
        """The wrapped layer op (the body's one op that is neither a weight nor the yield)."""
        ops = [op for op in self.body.block.ops if not isinstance(op, WeightOp | YieldOp)]
        if len(ops) != 1:
            raise VerifyException(f"accel.layer: the body holds {len(ops)} layer ops, not one")
        return ops[0]

    @property
    def layer_name(self) -> str:
        name = self.inner.properties.get("name")
        return name.data if isinstance(name, StringAttr) else self.inner.name

    @property
    def engine_name(self) -> str:
        return self.engine.root_reference.data

    @property
    def pe_count(self) -> int:
        return int(self.pes.value.data)

    @property
    def slot_index(self) -> int:
        return int(self.slot.value.data)

    @property
    def tile_sizes(self) -> tuple[int, ...] | None:
        return int_list(self.tile) if self.tile is not None else None

    def placement_of(self, tensor: str) -> str | None:
        attr = self.properties.get(tensor)
        return attr.data if isinstance(attr, StringAttr) else None

    def offset_of(self, tensor: str) -> int | None:
        attr = self.properties.get(f"{tensor}_offset")
        return int(attr.value.data) if isinstance(attr, IntegerAttr) else None

    def set_tile(self, sizes: Sequence[int], order: str) -> None:
        self.properties["tile"] = ints(sizes)
        self.properties["order"] = StringAttr(order)

    def set_placement(self, tensor: str, place: str, offset: int | None = None) -> None:
        self.properties[tensor] = StringAttr(place)
        key = f"{tensor}_offset"
        if offset is None:
            self.properties.pop(key, None)
        else:
            self.properties[key] = i64attr(offset)

    # --- verifying -----------------------------------------------------------------------

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise VerifyException(f"accel.layer '{self.layer_name}': {message}")

    def verify_(self) -> None:
        block = self.body.block
        self.check([a.type for a in block.args] == [v.type for v in self.inputs], "block arguments must match the operands")
        last = block.last_op
        self.check(isinstance(last, YieldOp), "the body must end with accel.yield")
        assert isinstance(last, YieldOp)
        self.check([v.type for v in last.values] == [r.type for r in self.outputs], "accel.yield must match the results")
        inner = self.inner
        self.check(list(last.values) == list(inner.results), "accel.yield must return the layer op's results")
        self.check(self.slot_index >= 0, "slot must not be negative")
        self.check(self.pe_count >= 1, f"pes must be positive, got {self.pe_count}")
        self.verify_engine()
        self.verify_tile(inner)
        self.verify_placements(inner)

    def verify_engine(self) -> None:
        try:
            engine = SymbolTable.lookup_symbol(self, self.engine)
        except ValueError:
            engine = None
        self.check(engine is not None, f"engine @{self.engine_name} is not defined")
        self.check(isinstance(engine, EngineOp), f"@{self.engine_name} is not an accel.engine")
        assert isinstance(engine, EngineOp)
        self.check(
            self.pe_count <= engine.pe_count,
            f"uses {self.pe_count} PEs but engine @{self.engine_name} has {engine.pe_count}",
        )

    def verify_tile(self, inner: Operation) -> None:
        from compiler.engines.base import LOOP_ORDERS
        from compiler.engines.workload import workload_of

        self.check((self.tile is None) == (self.order is None), "tile and order go together")
        if self.tile is None or self.order is None:
            return
        self.check(self.order.data in LOOP_ORDERS, f"loop order '{self.order.data}' is not one of {', '.join(LOOP_ORDERS)}")
        sizes = int_list(self.tile)
        self.check(len(sizes) == 4 and min(sizes) >= 1, f"tile {list(sizes)} must be four positive sizes (m, n, e, f)")
        layer = workload_of(inner)
        if layer is None:
            return
        dims = (layer.out_channels, layer.in_channels_per_group, layer.out_h, layer.out_w)
        for axis, size, dim in zip("mnef", sizes, dims, strict=True):
            self.check(size <= dim, f"tile {axis} = {size} exceeds the layer's {dim}: tiles must cover the layer")

    def verify_placements(self, inner: Operation) -> None:
        for tensor in TENSORS:
            place = self.placement_of(tensor)
            offset = self.offset_of(tensor) if tensor != "input" else None
            if place is None:
                self.check(offset is None, f"{tensor}_offset without a placement")
                continue
            self.check(place in PLACES, f"{tensor} placement '{place}' is not one of {', '.join(PLACES)}")
            if tensor != "input":
                self.check((place == "onchip") == (offset is not None), f"{tensor} on chip needs an offset (and only then)")
                self.check(offset is None or offset >= 0, f"{tensor}_offset must not be negative")
        if self.placement_of("weights") not in (None, "dram"):
            has_weights = any(isinstance(op, WeightOp) for op in self.body.block.ops)
            self.check(has_weights, "weights placed on chip but the layer has no weights")
        self.check(self.placement_of("weights") != "stream", "weights cannot stream")
        self.check(self.buffer_offset is None or int(self.buffer_offset.value.data) >= 0, "buffer_offset must not be negative")
        if self.placement_of("input") in ("onchip", "stream"):
            for v in self.inputs:
                producer = v.owner
                self.check(isinstance(producer, LayerOp), "input on chip but an operand is not a mapped layer's result")
                assert isinstance(producer, LayerOp)
                self.check(
                    producer.placement_of("output") in (None, "onchip", "stream"),
                    f"input on chip but layer '{producer.layer_name}' writes its output to DRAM",
                )


def engine_ops(module: Operation) -> dict[str, EngineOp]:
    """The module's engines by symbol name."""
    return {op.engine_name: op for op in module.walk() if isinstance(op, EngineOp)}


def attrs_of(params: dict[str, object]) -> DictionaryAttr:
    """Engine parameters (ints, strings, tuples of ints) as an attribute dictionary."""
    out: dict[str, Attribute] = {}
    for key, value in params.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            out[key] = i64attr(value)
        elif isinstance(value, float) and value.is_integer():
            out[key] = i64attr(int(value))
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            out[key] = ints(value)
        else:
            out[key] = StringAttr(str(value))
    return DictionaryAttr(out)


ACCEL = Dialect("accel", [EngineOp, LayerOp, YieldOp])


# The reference executor runs a mapped layer by running its body, so a mapped module
# executes exactly as before mapping. Registered here: whatever loads accel IR can run it.
def _run_layer(op: Operation, args: list) -> list:  # type: ignore[type-arg]
    from backends.reference.kernels import evaluate

    assert isinstance(op, LayerOp)
    env: dict[SSAValue, object] = dict(zip(op.body.block.args, args, strict=True))
    for inner in op.body.block.ops:
        if isinstance(inner, YieldOp):
            return [env[v] for v in inner.values]
        results = evaluate(inner, [env[v] for v in inner.operands])  # type: ignore[misc]
        env.update(zip(inner.results, results, strict=True))
    raise VerifyException("accel.layer body has no accel.yield")


def _register_kernel() -> None:
    from backends.reference.kernels import register_kernel

    register_kernel(LayerOp, _run_layer)


_register_kernel()
