"""ONNX frontend: `import_onnx(model) -> Program` (an `nn` module plus its weights).

The import runs in fixed steps so that problems surface in a useful order:

1. read the file (missing, empty, truncated, not ONNX) and check the opset (9 or newer);
2. scan every node and tensor for unsupported parts (op versions included) and report all
   of them at once;
3. check the graph itself (undefined names, tensors defined twice, cycles);
4. convert the nodes in topological order: constant and shape arithmetic is folded with
   NumPy into weights, everything else becomes `nn` ops whose result types come from the
   shape rules in `dialects/nn.py`;
5. assemble `func.func @main` and verify the module.

The converters live in `compiler/onnx_ops.py`; this module holds the reading, checking
and building machinery they share.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.defs
from numpy.typing import ArrayLike
from onnx import AttributeProto, NodeProto, TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, TensorType
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.irdl import IRDLOperation

from compiler.errors import ModelError, UnsupportedError
from compiler.program import Program, WeightStore
from compiler.registry import verify_module
from compiler.tensors import element_type, numpy_dtype, tensor_type

# Model opsets from MIN_OPSET on are read. Every op version up to MAX_OPSET is implemented;
# a node whose definition is newer is imported only if that version is listed in
# TYPE_ONLY_VERSIONS (it changed nothing but the element types, which are checked apart).
MIN_OPSET, MAX_OPSET = 9, 22
# Refuse tensors beyond this many elements before allocating anything for them.
MAX_ELEMENTS = 2**31

# ONNX element types we import, and their NumPy dtypes (compiler/tensors.py maps these).
ONNX_DTYPES: dict[int, np.dtype] = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.DOUBLE: np.dtype(np.float64),
    TensorProto.INT8: np.dtype(np.int8),
    TensorProto.INT16: np.dtype(np.int16),
    TensorProto.INT32: np.dtype(np.int32),
    TensorProto.INT64: np.dtype(np.int64),
    TensorProto.UINT8: np.dtype(np.uint8),
    TensorProto.UINT16: np.dtype(np.uint16),
    TensorProto.UINT32: np.dtype(np.uint32),
    TensorProto.UINT64: np.dtype(np.uint64),
    TensorProto.BOOL: np.dtype(np.bool_),
}

# A tensor during import: a NumPy array when known at import time, else an SSA value.
Value = np.ndarray | SSAValue


class Refused(Exception):
    """A converter cannot handle this node (becomes an UnsupportedError naming the node)."""


def dtype_name(onnx_type: object) -> str:
    try:
        return TensorProto.DataType.Name(onnx_type)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return f"type {onnx_type}"


def onnx_dtype(onnx_type: int) -> np.dtype:
    if onnx_type not in ONNX_DTYPES:
        raise Refused(f"element type {dtype_name(onnx_type)} not supported")
    return ONNX_DTYPES[onnx_type]


def check_size(shape: Sequence[int], what: str) -> None:
    """Refuse negative or absurdly large shapes before anything is allocated."""
    if any(d < 0 for d in shape):
        raise ValueError(f"{what} has a negative dimension in {tuple(shape)}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ValueError(f"{what} has an absurd size: shape {tuple(shape)} is over 2**31 elements")


# ---------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------


@dataclass
class Node:
    """A read-only view of one ONNX node with decoded attributes."""

    proto: NodeProto
    index: int
    opset: int
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.proto.name or f"{self.proto.op_type}_{self.index}"
        self.attrs = {a.name: _attribute_value(a) for a in self.proto.attribute}

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def inputs(self) -> list[str]:
        return list(self.proto.input)

    @property
    def outputs(self) -> list[str]:
        return list(self.proto.output)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.op_type})"

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.proto.input) and self.proto.input[i] != ""


def _attribute_value(a: AttributeProto) -> Any:
    if a.type == AttributeProto.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == AttributeProto.INTS:
        return [int(v) for v in a.ints]
    if a.type == AttributeProto.FLOATS:
        return [float(v) for v in a.floats]
    return helper.get_attribute_value(a)


# ---------------------------------------------------------------------------------------
# Reading the model and its tensors
# ---------------------------------------------------------------------------------------


def load_model(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str, Path | None]:
    """The model, a name for messages, and the folder external data may be read from."""
    if isinstance(model, onnx.ModelProto):
        return model, f"<model {model.graph.name or 'in memory'}>", None
    path = Path(model)
    where = str(path)
    if not path.exists():
        raise ModelError("file not found", where)
    if not path.is_file():
        raise ModelError("not a file", where)
    if path.stat().st_size == 0:
        raise ModelError("empty file, not an ONNX model", where)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-like and others
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"not a readable ONNX model ({reason})", where) from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelError("not an ONNX model (no graph or no opset)", where)
    return proto, where, path.resolve().parent


class TensorReader:
    """Decodes TensorProtos into NumPy arrays, checking sizes and external-data paths."""

    def __init__(self, base_dir: Path | None) -> None:
        self.base_dir = base_dir

    def read(self, t: TensorProto, what: str) -> np.ndarray:
        """`what` names the tensor in messages. Raises ValueError / Refused."""
        dtype = onnx_dtype(t.data_type)
        shape = [int(d) for d in t.dims]
        check_size(shape, what)
        count = math.prod(shape)
        if t.data_location == TensorProto.EXTERNAL:
            return self._read_external(t, dtype, shape, what)
        if t.HasField("raw_data"):
            have, need = len(t.raw_data), count * dtype.itemsize
            if have != need:
                raise ValueError(f"{what} declares shape {tuple(shape)} ({need} bytes) but holds {have} bytes")
        else:
            stored = len(getattr(t, helper.tensor_dtype_to_field(t.data_type)))
            if stored != count:
                raise ValueError(f"{what} declares shape {tuple(shape)} ({count} values) but holds {stored} values")
        return numpy_helper.to_array(t)

    def _read_external(self, t: TensorProto, dtype: np.dtype, shape: list[int], what: str) -> np.ndarray:
        if self.base_dir is None:
            raise ValueError(f"{what} uses external data, which an in-memory model cannot resolve; import the file")
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if not location:
            raise ValueError(f"{what} has external data without a location")
        base = self.base_dir.resolve()
        if Path(location).is_absolute():
            raise ValueError(f"{what}: external data path '{location}' is absolute; it must stay inside {base}")
        file = (base / location).resolve()
        if not file.is_relative_to(base):
            raise ValueError(f"{what}: external data path '{location}' leaves the model's folder {base}")
        if not file.is_file():
            raise ValueError(f"{what}: external data file '{location}' not found in {base}")
        offset = int(info.get("offset", 0))
        need = math.prod(shape) * dtype.itemsize
        length = int(info.get("length", need))
        available = file.stat().st_size - offset
        if offset < 0 or length != need or available < need:
            raise ValueError(
                f"{what} declares shape {tuple(shape)} ({need} bytes) but '{location}' holds "
                f"{max(min(length, available), 0)} bytes at offset {offset}"
            )
        data = np.fromfile(file, dtype=dtype.newbyteorder("<"), count=math.prod(shape), offset=offset)
        return data.astype(dtype, copy=False).reshape(shape)


# ---------------------------------------------------------------------------------------
# Building the nn module
# ---------------------------------------------------------------------------------------


class Builder:
    """State of one import: the tensors known so far, the ops emitted and the weights.

    Converters read operands through `value`/`ssa`/`const`, emit ops with `emit`, and
    return one Value per node output.
    """

    def __init__(self, store: WeightStore, reader: TensorReader) -> None:
        self.store = store
        self.reader = reader
        self.env: dict[str, Value] = {}
        self.ops: list[Operation] = []
        self._weights: dict[str, SSAValue] = {}
        # Who made each constant tensor (node name, or the initializer's own name): the
        # `name` of its nn.weight op.
        self.origin: dict[str, str] = {}
        self.node: Node | None = None

    # -- operands ---------------------------------------------------------------------

    def value(self, node: Node, i: int) -> Value:
        return self.env[node.inputs[i]]

    def optional(self, node: Node, i: int) -> Value | None:
        return self.env[node.inputs[i]] if node.has_input(i) else None

    def const(self, node: Node, i: int, what: str) -> np.ndarray:
        v = self.value(node, i)
        if not isinstance(v, np.ndarray):
            raise Refused(f"input '{what}' must be a constant")
        return v

    def optional_const(self, node: Node, i: int, what: str) -> np.ndarray | None:
        return self.const(node, i, what) if node.has_input(i) else None

    def ssa(self, node: Node, i: int) -> SSAValue:
        """Input i as an SSA value; a constant becomes (once) an `nn.weight` op."""
        name = node.inputs[i]
        v = self.env[name]
        if isinstance(v, SSAValue):
            return v
        if name not in self._weights:
            self._weights[name] = self.weight(v, name, layer=self.origin.get(name, name))
        return self._weights[name]

    def all_const(self, node: Node) -> bool:
        return all(isinstance(self.env[n], np.ndarray) for n in node.inputs if n)

    def weight(self, array: np.ndarray, hint: str, layer: str | None = None) -> SSAValue:
        """A new `nn.weight` op holding `array` (stored in the weight store under a handle
        derived from `hint`); its `name` is `layer`, by default the current node's."""
        from dialects.nn import WeightOp

        handle = self.store.add(np.asarray(array), hint=hint)
        layer = layer if layer is not None else (self.node.name if self.node else hint)
        return self.emit(WeightOp, [], array.shape, array.dtype, handle=StringAttr(handle), name=StringAttr(layer))

    # -- emitting ---------------------------------------------------------------------

    def emit(
        self,
        op_class: type[IRDLOperation],
        operands: Sequence[SSAValue | Sequence[SSAValue] | None],
        shape: Sequence[int],
        element: Attribute | np.dtype,
        **properties: Attribute | None,
    ) -> SSAValue:
        """Emit one op with one result of `shape`; `None` properties are left out."""
        result = self.emit_multi(op_class, operands, [shape], element, properties)[0]
        assert isinstance(result, SSAValue)
        return result

    def emit_multi(
        self,
        op_class: type[IRDLOperation],
        operands: Sequence[SSAValue | Sequence[SSAValue] | None],
        shapes: Sequence[Sequence[int]],
        element: Attribute | np.dtype,
        properties: dict[str, Attribute | None],
        variadic_results: bool = False,
    ) -> list[Value]:
        """Emit one op with a result per shape (as one variadic result group if asked)."""
        props = {k: v for k, v in properties.items() if v is not None}
        if self.node is not None:
            props.setdefault("name", StringAttr(self.node.name))
        for s in shapes:  # a huge pad or input dim must not reach the executor's allocations
            check_size(s, "the output")
        types = [tensor_type(s, element) for s in shapes]
        ops_operands = [[] if o is None else o for o in operands]
        op = op_class.build(
            operands=ops_operands, result_types=[types] if variadic_results else types, properties=props
        )
        self.ops.append(op)
        return [*op.results]

    def reshape(self, x: Value, shape: Sequence[int]) -> Value:
        from dialects.nn import ReshapeOp

        if isinstance(x, np.ndarray):
            return x.reshape(shape)
        if tuple(shape) == shape_of(x):
            return x
        return self.emit(ReshapeOp, [x], shape, element_of(x))


def shape_of(v: Value) -> tuple[int, ...]:
    if isinstance(v, np.ndarray):
        return tuple(v.shape)
    t = v.type
    assert isinstance(t, TensorType)
    return tuple(t.get_shape())


def element_of(v: Value) -> Attribute:
    if isinstance(v, np.ndarray):
        return element_type(v.dtype)
    t = v.type
    assert isinstance(t, TensorType)
    return t.get_element_type()


def dtype_of(v: Value) -> np.dtype:
    return v.dtype if isinstance(v, np.ndarray) else numpy_dtype(element_of(v))


# ---------------------------------------------------------------------------------------
# Graph structure
# ---------------------------------------------------------------------------------------


def topological_order(nodes: Sequence[Node], available: set[str]) -> tuple[list[Node], list[Node]]:
    """Kahn's algorithm over tensor names: (ordered nodes, nodes left on a cycle).
    Names produced by no node count as available (undefined names are checked apart)."""
    producer = {out: n.index for n in nodes for out in n.outputs if out}
    waiting: dict[int, int] = {}
    consumers: dict[str, list[int]] = {}
    for n in nodes:
        deps = {i for i in n.inputs if i and i in producer and i not in available}
        waiting[n.index] = len(deps)
        for d in deps:
            consumers.setdefault(d, []).append(n.index)
    by_index = {n.index: n for n in nodes}
    # A heap of node indices keeps the file's order whenever the file is already sorted.
    ready = [n.index for n in nodes if waiting[n.index] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        idx = heapq.heappop(ready)
        order.append(by_index[idx])
        for out in by_index[idx].outputs:
            for c in consumers.get(out, ()):
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, c)
    placed = {n.index for n in order}
    return order, [n for n in nodes if n.index not in placed]


def check_structure(nodes: Sequence[Node], graph: onnx.GraphProto, defined: set[str], where: str) -> None:
    """Tensors defined twice, undefined names (inputs and outputs). Raises ModelError."""
    seen = set(defined)
    for n in nodes:
        for out in n.outputs:
            if out and out in seen:
                raise ModelError(f"{n.label}: output '{out}' is already defined", where)
            seen.add(out)
    for n in nodes:
        for name in n.inputs:
            if name and name not in seen:
                raise ModelError(f"{n.label}: input '{name}' is not defined in the graph", where)
    for out in graph.output:
        if out.name not in seen:
            raise ModelError(f"graph output '{out.name}' is not defined in the graph", where)


# ---------------------------------------------------------------------------------------
# The import
# ---------------------------------------------------------------------------------------


def model_opset(model: onnx.ModelProto, where: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelError("model imports no default-domain (ai.onnx) opset", where)
    opset = int(versions[0])
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UnsupportedError(
            f"opset {opset} not supported (layerloom reads opsets {MIN_OPSET} to {newest}; "
            f"op versions after {MAX_OPSET} only where they changed nothing but types)",
            where,
        )
    return opset


# Op versions newer than MAX_OPSET whose only change is new element types (float4e2m1 in
# 23, float8e8m0 in 24, int2/uint2 in 25): the importer implements them as the version
# before. Checked against ONNX's Changelog and, in tests/test_import_errors.py, against the
# schemas (same inputs, outputs and attributes; the old types a subset of the new).
TYPE_ONLY_VERSIONS: dict[str, tuple[int, ...]] = {
    op: (23, 24, 25)
    for op in (
        "Constant",
        "ConstantOfShape",
        "Flatten",
        "Identity",
        "Pad",
        "Reshape",
        "Shape",
        "Squeeze",
        "Transpose",
        "Unsqueeze",
    )
} | {"Cast": (23,)}  # Cast-24 added round_mode and changed float8 saturation


# Versions after MAX_OPSET whose converter reads them in full, new attributes included
# (the quantization ops of compiler/onnx_qdq.py register theirs).
CONVERTER_VERSIONS: dict[str, tuple[int, ...]] = {}


def version_problem(op_type: str, opset: int) -> str | None:
    """Why the definition of `op_type` in `opset` is not one the importer implements."""
    try:
        schema = onnx.defs.get_schema(op_type, max_inclusive_version=opset, domain="")
    except onnx.defs.SchemaError:
        return f"not defined in opset {opset}"
    version = schema.since_version
    if schema.deprecated:
        return f"deprecated since version {version} (opset {opset})"
    if version > MAX_OPSET and version not in TYPE_ONLY_VERSIONS.get(op_type, ()) + CONVERTER_VERSIONS.get(op_type, ()):
        return f"{op_type}-{version} (opset {opset}) not supported (layerloom implements versions up to opset {MAX_OPSET})"
    return None


def attribute_problems(n: Node) -> list[str]:
    """What the ONNX spec rejects in `n`'s attributes (the checker's rule, which onnxruntime
    applies too): names its op does not define, and values of another type than defined."""
    try:
        defined = onnx.defs.get_schema(n.op_type, max_inclusive_version=n.opset, domain="").attributes
    except onnx.defs.SchemaError:
        return []
    problems = []
    for a in n.proto.attribute:
        spec = defined.get(a.name)
        given = AttributeProto.AttributeType.Name(a.type)
        if spec is None:
            problems.append(f"attribute '{a.name}' is not defined for {n.op_type} in opset {n.opset}")
        elif given != (expected := str(spec.type).rsplit(".", 1)[-1]):  # "AttrType.INTS"
            problems.append(f"attribute '{a.name}' is {given}, {n.op_type} defines it as {expected}")
    return problems


def input_types(
    graph: onnx.GraphProto, initializers: set[str], input_shapes: dict[str, Sequence[int]], where: str
) -> list[tuple[str, TensorType]]:
    """Graph inputs (initializers and other constants excluded) with their static types;
    dynamic dims are 1 unless `input_shapes` gives them."""
    inputs = [i for i in graph.input if i.name not in initializers]
    known = {i.name for i in inputs}
    for name in input_shapes:
        if name not in known:
            kind = "an initializer or a value given in constants" if name in initializers else "not a graph input"
            raise ModelError(f"input_shapes names '{name}', which is {kind}; inputs are {sorted(known)}", where)
    result = []
    for i in inputs:
        if not i.type.HasField("tensor_type"):
            raise UnsupportedError(f"graph input '{i.name}' is not a tensor", where)
        tt = i.type.tensor_type
        dtype = ONNX_DTYPES[tt.elem_type]  # unsupported types are refused by the scan
        declared = [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in tt.shape.dim]
        has_shape = tt.HasField("shape")
        if i.name in input_shapes:
            shape = [int(d) for d in input_shapes[i.name]]
            if any(d < 1 for d in shape):
                raise ModelError(f"input_shapes gives '{i.name}' a non-positive dimension: {shape}", where)
            if has_shape and len(shape) != len(declared):
                raise ModelError(f"input '{i.name}' has rank {len(declared)}, input_shapes gives {shape}", where)
            for axis, (d, want) in enumerate(zip(declared, shape, strict=False)):
                if has_shape and d is not None and d != want:
                    raise ModelError(f"input '{i.name}' has static dim {d} at axis {axis}, input_shapes gives {want}", where)
        elif not has_shape:
            raise ModelError(f"input '{i.name}' has no shape; give it with input_shapes", where)
        else:
            shape = [1 if d is None else d for d in declared]
        try:
            check_size(shape, f"input '{i.name}'")
        except ValueError as e:
            raise ModelError(str(e), where) from None
        result.append((i.name, tensor_type(shape, dtype)))
    return result


def scan_unsupported(
    nodes: Sequence[Node],
    graph: onnx.GraphProto,
    order: Sequence[Node],
    used: set[str],
    frozen: set[str],
    where: str,
) -> None:
    """Find every unsupported node and tensor and raise one UnsupportedError listing them.
    `frozen`: graph inputs given values with `constants=`."""
    from compiler.onnx_ops import CONVERTERS, constant_outputs, node_problems

    tensors: list[str] = []  # unsupported tensors: "name (kind): reason"
    initializers = {t.name for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - initializers - frozen
    for t in graph.initializer:
        if t.data_type not in ONNX_DTYPES:
            tensors.append(f"{t.name} (initializer): element type {dtype_name(t.data_type)} not supported")
    for t in graph.sparse_initializer:
        tensors.append(f"{t.values.name} (sparse initializer): sparse tensors not supported")
    for i in graph.input:
        elem = i.type.tensor_type.elem_type if i.type.HasField("tensor_type") else None
        if i.name not in initializers and elem is not None and elem not in ONNX_DTYPES:
            tensors.append(f"{i.name} (graph input): element type {dtype_name(elem)} not supported")

    constants = initializers | frozen
    for n in order:
        if n.op_type in CONVERTERS and n.proto.domain in ("", "ai.onnx"):
            constants |= constant_outputs(n, constants)
    bad_nodes: list[str] = []  # "name (OpType): reason, reason"
    for n in nodes:
        if n.proto.domain not in ("", "ai.onnx"):
            reasons = [f"domain '{n.proto.domain}' not supported"]
        elif n.op_type not in CONVERTERS:
            reasons = ["op not supported"]
        else:
            version = version_problem(n.op_type, n.opset)
            # Attributes of the wrong type would mislead the converters' checks: reported alone.
            reasons = [version] if version else attribute_problems(n) or list(node_problems(n, constants, used, graph_inputs))
        if reasons:
            bad_nodes.append(f"{n.label}: {', '.join(reasons)}")

    problems = tensors + bad_nodes
    if problems:
        noun = "node" if not tensors else "tensor" if not bad_nodes else "part"
        count = f"{len(problems)} unsupported {noun}{'' if len(problems) == 1 else 's'}"
        raise UnsupportedError(f"{count} in {Path(where).name}: " + "; ".join(problems), where)


def frozen_inputs(
    graph: onnx.GraphProto, initializers: set[str], constants: dict[str, ArrayLike], where: str
) -> dict[str, np.ndarray]:
    """The `constants=` arrays, checked against the graph inputs they replace."""
    declared = {i.name: i for i in graph.input if i.name not in initializers}
    frozen: dict[str, np.ndarray] = {}
    for name, value in constants.items():
        if name not in declared:
            kind = "an initializer" if name in initializers else "not a graph input"
            raise ModelError(f"constants names '{name}', which is {kind}; inputs are {sorted(declared)}", where)
        array = np.array(value)  # a copy: the weight store must not alias the caller's array
        tt = declared[name].type.tensor_type
        dtype = ONNX_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise UnsupportedError(f"graph input '{name}': element type {dtype_name(tt.elem_type)} not supported", where)
        if array.dtype != dtype:
            raise ModelError(f"constants gives '{name}' as {array.dtype}, the input is {dtype}", where)
        if tt.HasField("shape"):
            dims = [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in tt.shape.dim]
            if len(dims) != array.ndim or any(d is not None and d != s for d, s in zip(dims, array.shape, strict=False)):
                shown = ["?" if d is None else d for d in dims]
                raise ModelError(f"constants gives '{name}' shape {list(array.shape)}, the input has {shown}", where)
        try:
            check_size(array.shape, f"constant '{name}'")
        except ValueError as e:
            raise ModelError(str(e), where) from None
        frozen[name] = array
    return frozen


def parameter_inputs(model: str | Path | onnx.ModelProto) -> list[str]:
    """Graph inputs whose values the importer needs (they set a shape or a parameter, such
    as a Reshape's shape or a Resize's scales, directly or through foldable nodes): give
    them to `import_onnx` with `constants=`."""
    from compiler.onnx_ops import FOLDABLE, const_inputs

    proto, where, _ = load_model(model)
    opset = model_opset(proto, where)
    nodes = [Node(n, i, opset) for i, n in enumerate(proto.graph.node)]
    producer = {out: n for n in nodes for out in n.outputs if out}
    needed = [n.inputs[i] for n in nodes for i in const_inputs(n) if n.has_input(i)]
    seen: set[str] = set()
    while needed:
        name = needed.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is not None and node.op_type in FOLDABLE:  # Shape and Constant need nothing
            needed.extend(i for i in node.inputs if i)
    initializers = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name in seen and i.name not in initializers]


def import_onnx(
    model: str | Path | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    constants: Mapping[str, ArrayLike] | None = None,
) -> Program:
    """Import an ONNX model (a path or a ModelProto) as an `nn` Program.

    Dynamic input dimensions become 1 unless `input_shapes` gives the input's shape.
    `constants` gives graph inputs fixed values: they become weights, not arguments of
    `@main`. Inputs that set a shape or a parameter (a Reshape's shape, a Resize's scales:
    `parameter_inputs(model)` lists them) must be given this way.
    Raises LayerloomError (UnsupportedError, ModelError) for anything wrong with the model.
    """
    from compiler.onnx_ops import CONVERTERS
    from compiler.onnx_qdq import fuse_qdq  # also registers the QuantizeLinear & co converters

    proto, where, base_dir = load_model(model)
    opset = model_opset(proto, where)
    graph = proto.graph
    nodes = [Node(n, i, opset) for i, n in enumerate(graph.node)]
    initializers = {t.name: t for t in graph.initializer}
    frozen = frozen_inputs(graph, set(initializers), dict(constants or {}), where)
    graph_inputs = [i.name for i in graph.input if i.name not in initializers and i.name not in frozen]
    defined = set(initializers) | set(frozen) | set(graph_inputs)
    used = {i for n in nodes for i in n.inputs if i} | {o.name for o in graph.output}

    order, on_cycle = topological_order(nodes, defined)
    scan_unsupported(nodes, graph, order, used, set(frozen), where)
    check_structure(nodes, graph, defined, where)
    if on_cycle:
        cycle = ", ".join(n.label for n in on_cycle[:5]) + (", ..." if len(on_cycle) > 5 else "")
        raise ModelError(f"graph has a cycle through {cycle}", where)
    args = input_types(graph, set(initializers) | set(frozen), dict(input_shapes or {}), where)

    store = WeightStore()
    builder = Builder(store, TensorReader(base_dir))
    block = Block(arg_types=[t for _, t in args])
    for (name, _), arg in zip(args, block.args, strict=False):
        builder.env[name] = arg
    for name, t in initializers.items():
        builder.env[name] = _read_or_fail(builder.reader, t, f"initializer '{name}'", where)
    builder.env.update(frozen)

    for n in order:
        builder.node = n
        try:
            outputs = CONVERTERS[n.op_type](builder, n)
        except Refused as e:
            raise UnsupportedError(f"{n.label}: {e}", where) from None
        except (ValueError, IndexError, KeyError, TypeError) as e:
            raise ModelError(f"{n.label}: {_reason(e)}", where) from None
        for out, value in zip(n.outputs, outputs, strict=False):
            if isinstance(value, np.generic):  # NumPy reductions and np.take can give scalars
                value = np.asarray(value)
            if out:
                builder.env[out] = value
                builder.origin[out] = n.name
    builder.node = None

    results = [_output_value(builder, o.name) for o in graph.output]
    block.add_ops([*builder.ops, ReturnOp(*results)])
    func = FuncOp(
        "main",
        ([t for _, t in args], [r.type for r in results]),
        Region(block),
        arg_attrs=_name_attrs([name for name, _ in args]),
        res_attrs=_name_attrs([o.name for o in graph.output]),
    )
    module = ModuleOp([func])
    verify_module(module, where)
    return fuse_qdq(Program(module, store, where))


def _read_or_fail(reader: TensorReader, t: TensorProto, what: str, where: str) -> np.ndarray:
    try:
        return reader.read(t, what)
    except Refused as e:
        raise UnsupportedError(f"{what}: {e}", where) from None
    except ValueError as e:
        raise ModelError(str(e), where) from None


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text.strip("'\"") if isinstance(e, KeyError) else text


def _output_value(builder: Builder, name: str) -> SSAValue:
    v = builder.env[name]
    if isinstance(v, SSAValue):
        return v
    return builder.weight(v, name, layer=builder.origin.get(name, name))


def _name_attrs(names: Sequence[str]) -> ArrayAttr[DictionaryAttr]:
    return ArrayAttr([DictionaryAttr({"nn.name": StringAttr(n)}) for n in names])

