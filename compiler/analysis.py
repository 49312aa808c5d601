"""Per-layer facts read off the IR: what each layer is, its shapes, MACs, parameters and
bytes. The driver's summary table, `summary.json` and (later) the cost model all use
these, so the counting rules live in one place:

- A *layer* is every op of the program's function except weights (`nn.weight`: data,
  not work) and the function's own ops (`func.return`). Everything else is listed, in
  program order, including data-movement ops (concat, pad, transpose, ...).
- `nn.identity` and `nn.reshape` are *views*: listed (so the table matches the graph)
  but marked `is_view`, with 0 MACs and 0 activation bytes, because no data moves.
- MACs (multiply-accumulates, padding included as the hardware computes it):
  conv2d / depthwise = N·M·OH·OW·(C/group)·kh·kw; gemm = M·N·K; matmul = batch·M·N·K.
  Every other op (elementwise, activations, pooling, batchnorm, data movement) counts
  0 MACs: it has no multiply-accumulate, and its work is visible in activation bytes.
- Parameters = elements of the layer's weight operands (values defined by `nn.weight`);
  weight bytes = their size in bytes. A weight shared by two layers counts for each.
- Activation bytes = bytes of the non-weight operands read plus the results written:
  the layer's feature-map traffic if nothing stays on chip.
- Op kinds: `conv2d` (also grouped), `depthwise` (one input channel per group),
  `gemm`, `matmul`, `maxpool` / `avgpool`, `global_avgpool` / `global_maxpool`, and for
  the rest the op's name without the dialect prefix (`add`, `relu`, `concat`, ...).

Other dialects (qnn, ...) add their ops with `register_layer_rule` and `register_weight_op`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from compiler.program import Program
from compiler.tensors import dtype_of
from dialects import nn, qnn

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    name: str
    op: str
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    weight_shapes: tuple[Shape, ...]
    dtype: str
    macs: int
    params: int
    weight_bytes: int
    input_bytes: int
    output_bytes: int
    activation: str | None = None
    is_view: bool = False

    @property
    def output_shape(self) -> Shape:
        return self.output_shapes[0] if self.output_shapes else ()

    @property
    def weight_shape(self) -> Shape | None:
        """The main weight (the first weight operand: a conv's OIHW kernel, a gemm's B)."""
        return self.weight_shapes[0] if self.weight_shapes else None

    @property
    def activation_bytes(self) -> int:
        return self.input_bytes + self.output_bytes

    @property
    def label(self) -> str:
        """The op kind with its fused activation, e.g. `conv2d+relu`."""
        return f"{self.op}+{self.activation}" if self.activation else self.op

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the headline facts first, then every field."""
        head = {"name": self.name, "op": self.op, "activation": self.activation, "output_shape": self.output_shape,
                "macs": self.macs, "params": self.params, "weight_shape": self.weight_shape,
                "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes}
        d = _jsonable(head | asdict(self))
        assert isinstance(d, dict)
        return d


@dataclass(frozen=True)
class Totals:
    layers: int
    macs: int
    params: int
    weight_bytes: int
    activation_bytes: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --- rules per op class: (op) -> (kind, macs) --------------------------------------------

LayerRule = Callable[[Operation], tuple[str, int]]
_RULES: dict[type[Operation], LayerRule] = {}
_WEIGHT_OPS: set[type[Operation]] = {nn.WeightOp}
_VIEW_OPS: set[type[Operation]] = {nn.IdentityOp, nn.ReshapeOp}
_NOT_LAYERS = ("func.", "builtin.")


def register_layer_rule(op_type: type[Operation], rule: LayerRule) -> None:
    _RULES[op_type] = rule


def register_weight_op(op_type: type[Operation]) -> None:
    _WEIGHT_OPS.add(op_type)


def _conv2d(op: Operation) -> tuple[str, int]:
    assert isinstance(op, nn.Conv2dOp | qnn.Conv2dOp)
    x, w, y = nn.shape_of(op.input), nn.shape_of(op.weight), nn.shape_of(op.result)
    group = op.group.value.data
    depthwise = group > 1 and w[1] == 1 and group == x[1]
    # Every output element is one dot product over (C / group) · kh · kw inputs.
    return ("depthwise" if depthwise else "conv2d"), math.prod(y) * math.prod(w[1:])


def _gemm(op: Operation) -> tuple[str, int]:
    assert isinstance(op, nn.GemmOp | qnn.GemmOp)
    a = nn.shape_of(op.a)
    k = a[0] if isinstance(op, nn.GemmOp) and op.trans_a.value.data else a[1]
    return "gemm", math.prod(nn.shape_of(op.result)) * k


def _matmul(op: Operation) -> tuple[str, int]:
    assert isinstance(op, nn.MatMulOp | qnn.MatMulOp)
    k = nn.shape_of(op.a)[-1]
    return "matmul", math.prod(nn.shape_of(op.result)) * k


def _pool(op: Operation) -> tuple[str, int]:
    assert isinstance(op, nn.PoolOp | qnn.PoolOp)
    return f"{op.kind.data}pool", 0


def _global_pool(op: Operation) -> tuple[str, int]:
    assert isinstance(op, nn.GlobalPoolOp | qnn.GlobalPoolOp)
    return f"global_{op.kind.data}pool", 0


for _type, _rule in (
    (nn.Conv2dOp, _conv2d),
    (nn.GemmOp, _gemm),
    (nn.MatMulOp, _matmul),
    (nn.PoolOp, _pool),
    (nn.GlobalPoolOp, _global_pool),
    (qnn.Conv2dOp, _conv2d),  # the integer forms count the same MACs
    (qnn.GemmOp, _gemm),
    (qnn.MatMulOp, _matmul),
    (qnn.PoolOp, _pool),
    (qnn.GlobalPoolOp, _global_pool),
):
    register_layer_rule(_type, _rule)


# --- analysis ----------------------------------------------------------------------------


def analyze(program: Program | ModuleOp) -> list[LayerInfo]:
    """One LayerInfo per layer of `program`, in program order."""
    module = program.module if isinstance(program, Program) else program
    layers: list[LayerInfo] = []
    for op in module.walk():
        if not is_layer(op):
            continue
        layers.append(_layer_info(op, fallback_name=f"{op.name.partition('.')[2]}_{len(layers)}"))
    return layers


def is_layer(op: Operation) -> bool:
    # An op with regions (accel.layer) holds a layer rather than being one.
    return not op.name.startswith(_NOT_LAYERS) and type(op) not in _WEIGHT_OPS and len(op.results) > 0 and not op.regions


def totals(layers: Sequence[LayerInfo]) -> Totals:
    return Totals(
        layers=len(layers),
        macs=sum(x.macs for x in layers),
        params=sum(x.params for x in layers),
        weight_bytes=sum(x.weight_bytes for x in layers),
        activation_bytes=sum(x.activation_bytes for x in layers),
    )


def _layer_info(op: Operation, fallback_name: str) -> LayerInfo:
    rule = _RULES.get(type(op))
    kind, macs = rule(op) if rule else (op.name.partition(".")[2], 0)
    weights = [v for v in op.operands if _is_weight(v)]
    activations = [v for v in op.operands if not _is_weight(v)]
    is_view = type(op) in _VIEW_OPS
    activation = getattr(op, "activation", None)
    return LayerInfo(
        name=getattr(op, "layer_name", "") or fallback_name,
        op=kind,
        input_shapes=tuple(_shape(v) for v in activations),
        output_shapes=tuple(_shape(v) for v in op.results),
        weight_shapes=tuple(_shape(v) for v in weights),
        dtype=str(_dtype(op.results[0])),
        macs=int(macs),
        params=sum(math.prod(_shape(v)) for v in weights),
        weight_bytes=_bytes(weights),
        input_bytes=0 if is_view else _bytes(activations),
        output_bytes=0 if is_view else _bytes(op.results),
        activation=activation.data if activation is not None else None,
        is_view=is_view,
    )


def _is_weight(value: SSAValue) -> bool:
    owner = value.owner
    return isinstance(owner, Operation) and type(owner) in _WEIGHT_OPS


def _shape(value: SSAValue) -> Shape:
    t = value.type
    return tuple(int(d) for d in t.get_shape()) if isinstance(t, TensorType) else ()


def _dtype(value: SSAValue) -> object:
    return dtype_of(value.type) if isinstance(value.type, TensorType) else value.type


def _bytes(values: Iterable[SSAValue]) -> int:
    total = 0
    for v in values:
        if isinstance(v.type, TensorType):
            total += math.prod(_shape(v)) * dtype_of(v.type).itemsize
    return total


def _jsonable(value: object) -> object:
    """Tuples become lists, recursively, so the dict is what `json.loads` gives back."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --- the table the driver prints ---------------------------------------------------------


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def layer_table(layers: Sequence[LayerInfo]) -> str:
    """Aligned per-layer table (name, op, output shape, MACs, params) with a totals row."""
    total = totals(layers)
    header = ("layer", "op", "output shape", "MACs", "params")
    rows = [(x.name, x.label, format_shape(x.output_shape), f"{x.macs:,}", f"{x.params:,}") for x in layers]
    footer = (f"total ({total.layers} layers)", "", "", f"{total.macs:,}", f"{total.params:,}")
    widths = [max(len(r[i]) for r in [header, *rows, footer]) for i in range(len(header))]
    numeric = (False, False, False, True, True)

    def line(row: Sequence[str]) -> str:
        cells = [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric, strict=True)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    weights = f"weights: {_human_bytes(total.weight_bytes)}"
    return "\n".join([line(header), rule, *map(line, rows), rule, line(footer), weights]) + "\n"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
