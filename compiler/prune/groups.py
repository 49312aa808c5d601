"""Channel groups: which tensors share their channels (axis 1), so that removing a channel
from one removes it from all of them, and what every op then has to slice.

One pass over the function body joins tensors with a union-find:

- a dense `nn.conv2d` (group 1) or an `nn.gemm` with constant weights is a *source*: its
  filters (output features) are the channels of its result. Its input is *consumed*: the
  weight's input-channel slice follows the input's group.
- channels pass through unchanged (input and result join one group): batchnorm (its four
  parameters are sliced), a depthwise conv (one filter per input channel: filters and bias
  are sliced), activations, identity, pooling, global pooling, a pad or a resize that
  leaves the channel axis alone, softmax along another axis, concat along another axis,
  a reshape that keeps axes 0 and 1.
- an elementwise add/sub/mul/div joins the operands that carry the result's channels:
  the producers of a residual add share one group (tied channels); a per-channel
  constant operand is sliced with them.
- a group can be *built* from others: a concat along the channels (its channels are the
  operands' channels one after the other) or a flatten (channel c of an N x C x H x W
  tensor becomes features c·H·W ... c·H·W + H·W - 1).

A group is frozen (never pruned) when its channels reach something whose channel count
must not change or that pruning cannot follow: a graph input or output, a constant, an
op it does not know (transpose, slice, matmul, ...), a grouped conv, weights that are
not constants. The first such reason is kept for the report. A built group that is
frozen freezes the groups it is built from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.func import ReturnOp
from xdsl.ir import Block, Operation, SSAValue

from compiler.program import WeightStore
from dialects import nn
from passes.utils import weight_array, weight_op_of

CRITERIA = ("l1", "l2", "bn-gamma")

# Ops whose result has the channels of their (only) input, element by element or window by window.
PASS_THROUGH: tuple[type[Operation], ...] = (
    nn.IdentityOp, nn.ReluOp, nn.SigmoidOp, nn.TanhOp, nn.HardSwishOp, nn.ClipOp, nn.LeakyReluOp,
    nn.HardSigmoidOp, nn.PoolOp, nn.GlobalPoolOp,
)  # fmt: skip
ELEMENTWISE: tuple[type[Operation], ...] = (nn.AddOp, nn.SubOp, nn.MulOp, nn.DivOp)


@dataclass(frozen=True)
class WeightSlice:
    """Operand `operand` (a weight) of an op is sliced along `axis` by the kept channels of `by`."""

    operand: int
    axis: int
    by: SSAValue


@dataclass
class Group:
    """Tensors sharing one set of channels."""

    index: int
    channels: int
    values: list[SSAValue] = field(default_factory=list)
    sources: list[Operation] = field(default_factory=list)  # dense convs / gemms: their filters are the channels
    followers: list[Operation] = field(default_factory=list)  # depthwise convs, batchnorms, per-channel constants
    builders: list[Operation] = field(default_factory=list)  # concat / flatten making these channels of others
    reason: str | None = None  # why the channels cannot change

    @property
    def prunable(self) -> bool:
        return self.reason is None and not self.builders and bool(self.sources)


def describe(op: Operation) -> str:
    name = op.layer_name if isinstance(op, nn.NNOp) else ""
    return f"{op.name} '{name}'" if name else op.name


def rank(value: SSAValue) -> int:
    return len(nn.shape_of(value)) if hasattr(value.type, "get_shape") else 0


class ChannelGraph:
    """The channel groups of one function body (`block`), with the weights in `store`.
    Group numbering follows program order, so a clone of the module gets the same groups."""

    def __init__(self, block: Block, store: WeightStore, input_names: list[str]) -> None:
        self.store = store
        self.parent: dict[SSAValue, SSAValue] = {}
        self.reasons: dict[SSAValue, str] = {}
        self.roles: dict[SSAValue, dict[str, list[Operation]]] = {}
        self.slices: dict[Operation, list[WeightSlice]] = {}
        self.flatten_factor: dict[Operation, int] = {}
        for arg, name in zip(block.args, input_names, strict=True):
            self.freeze(arg, f"is the graph input '{name}'")
        for op in block.ops:
            self.visit(op)
        self.groups = self.collect(block)
        self.freeze_built()

    # -- union-find ------------------------------------------------------------------------

    def node(self, value: SSAValue) -> SSAValue | None:
        """The value's root, creating its node; None for tensors without a channel axis."""
        if rank(value) < 2:
            return None
        if value not in self.parent:
            self.parent[value] = value
            if weight_op_of(value) is not None:
                self.reasons[value] = "is a constant"
        root = value
        while self.parent[root] is not root:
            self.parent[root] = self.parent[self.parent[root]]
            root = self.parent[root]
        return root

    def union(self, *values: SSAValue) -> None:
        roots = [r for r in map(self.node, values) if r is not None]
        if not roots:
            return
        keep = roots[0]
        for other in roots[1:]:
            if other is keep:
                continue
            self.parent[other] = keep
            if keep not in self.reasons and other in self.reasons:
                self.reasons[keep] = self.reasons[other]
            for role, ops in self.roles.pop(other, {}).items():
                self.roles.setdefault(keep, {}).setdefault(role, []).extend(ops)

    def freeze(self, value: SSAValue, reason: str) -> None:
        root = self.node(value)
        if root is not None:
            self.reasons.setdefault(root, reason)

    def add_role(self, value: SSAValue, role: str, op: Operation) -> None:
        root = self.node(value)
        if root is not None:
            self.roles.setdefault(root, {}).setdefault(role, []).append(op)

    def weight(self, value: SSAValue | None) -> np.ndarray | None:
        return weight_array(value, self.store)

    def constant(self, value: SSAValue | None) -> bool:
        return value is None or self.weight(value) is not None

    # -- what each op does with channels ---------------------------------------------------

    def visit(self, op: Operation) -> None:
        if isinstance(op, nn.WeightOp):
            return
        if isinstance(op, ReturnOp):
            for v in op.operands:
                self.freeze(v, "reaches the graph output")
        elif isinstance(op, nn.Conv2dOp):
            self.conv(op)
        elif isinstance(op, nn.GemmOp):
            self.gemm(op)
        elif isinstance(op, nn.BatchNormOp):
            if not all(self.constant(p) for p in (op.scale, op.bias, op.mean, op.var)):
                return self.opaque(op, "its parameters are not constants")
            self.union(op.input, op.result)
            self.add_role(op.result, "followers", op)
            self.slices[op] = [WeightSlice(i, 0, op.result) for i in range(1, 5)]
        elif isinstance(op, PASS_THROUGH):
            self.union(op.operands[0], op.results[0])
        elif isinstance(op, nn.SoftmaxOp) and op.axis.value.data != 1:
            self.union(op.input, op.result)
        elif isinstance(op, nn.PadOp):
            pads, r = nn.int_list(op.pads), rank(op.input)
            if r >= 2 and (pads[1] or pads[1 + r]):
                return self.opaque(op, "it pads the channel axis")
            self.union(op.input, op.result)
        elif isinstance(op, nn.ResizeOp):
            same = nn.shape_of(op.input)[1:2] == nn.shape_of(op.result)[1:2]
            if op.coordinate_mode.data == "tf_crop_and_resize" or nn.float_list(op.scales)[1:2] != (1.0,) or not same:
                return self.opaque(op, "it resizes the channel axis")
            self.union(op.input, op.result)
        elif isinstance(op, ELEMENTWISE):
            self.elementwise(op)
        elif isinstance(op, nn.ConcatOp):
            if op.axis.value.data == 1:
                self.add_role(op.result, "builders", op)
                for v in op.inputs:
                    self.node(v)
            else:
                self.union(op.result, *op.inputs)
        elif isinstance(op, nn.ReshapeOp):
            self.reshape(op)
        else:
            self.opaque(op, "which prune cannot follow")

    def opaque(self, op: Operation, why: str) -> None:
        for v in op.operands:
            if weight_op_of(v) is None:
                self.freeze(v, f"is read by {describe(op)}, {why}")
        for r in op.results:
            self.freeze(r, f"is made by {describe(op)}, {why}")

    def conv(self, op: nn.Conv2dOp) -> None:
        if not (self.constant(op.weight) and self.constant(op.bias)):
            return self.opaque(op, "its weights are not constants")
        group, channels = op.group.value.data, nn.shape_of(op.input)[1]
        bias = [WeightSlice(2, 0, op.result)] if op.bias is not None else []
        if group == 1:
            self.add_role(op.result, "sources", op)
            self.node(op.input)
            self.slices[op] = [WeightSlice(1, 0, op.result), *bias, WeightSlice(1, 1, op.input)]
        elif group == channels == nn.shape_of(op.result)[1]:
            self.union(op.input, op.result)
            self.add_role(op.result, "followers", op)
            self.slices[op] = [WeightSlice(1, 0, op.result), *bias]
        else:
            self.opaque(op, f"a grouped convolution (group {group})")

    def gemm(self, op: nn.GemmOp) -> None:
        if op.trans_a.value.data or not (self.constant(op.b) and self.constant(op.c)):
            return self.opaque(op, "it has a transposed A or weights that are not constants")
        out_axis = 0 if op.trans_b.value.data else 1
        slices = [WeightSlice(1, out_axis, op.result), WeightSlice(1, 1 - out_axis, op.a)]
        n = nn.shape_of(op.result)[1]
        c = self.weight(op.c)
        if c is not None and c.ndim >= 1 and c.shape[-1] == n > 1:
            slices.append(WeightSlice(2, c.ndim - 1, op.result))
        self.add_role(op.result, "sources", op)
        self.node(op.a)
        self.slices[op] = slices

    def elementwise(self, op: Operation) -> None:
        """Operands that carry the result's channels join its group; a constant one is
        sliced with them; anything broadcast along the channels is left as it is, and a
        non-constant tensor broadcast into the channel axis freezes the group."""
        result = op.results[0]
        r, channels = rank(result), nn.shape_of(result)[1] if rank(result) >= 2 else 0
        if r < 2:
            return
        joined, slices = False, []
        for index, v in enumerate(op.operands):
            shape = nn.shape_of(v)
            axis = 1 - (r - len(shape))  # the operand's axis that broadcasts into the channels
            along = shape[axis] if axis >= 0 else 1
            if weight_op_of(v) is not None:
                if along == channels > 1:
                    slices.append(WeightSlice(index, axis, result))
            elif len(shape) == r and along == channels:
                self.union(v, result)
                joined = True
            else:
                self.freeze(v, f"is broadcast into the channels by {describe(op)}")
        if not joined:
            self.freeze(result, f"is made by {describe(op)} from broadcast operands")
        if slices:
            self.add_role(result, "followers", op)
            self.slices[op] = slices

    def reshape(self, op: nn.ReshapeOp) -> None:
        x, y = nn.shape_of(op.input), nn.shape_of(op.result)
        if len(x) >= 2 and len(y) >= 2 and x[0] == y[0]:
            # Row-major: if y's axis 1 is x's axes 1 .. j-1 merged, each y[n, k] is one
            # contiguous block of x, whatever happens to the axes after them.
            j = next((j for j in range(2, len(x) + 1) if math.prod(x[1:j]) == y[1]), None)
            if j == 2:
                return self.union(op.input, op.result)
            if j is not None:
                self.flatten_factor[op] = math.prod(x[2:j])
                self.add_role(op.result, "builders", op)
                self.node(op.input)
                return
        self.opaque(op, "a reshape that moves the channel axis")

    # -- groups ------------------------------------------------------------------------------

    def collect(self, block: Block) -> list[Group]:
        """One Group per root, numbered in program order."""
        values: list[SSAValue] = list(block.args) + [r for op in block.ops for r in op.results]
        order = {op: i for i, op in enumerate(block.ops)}
        by_root: dict[SSAValue, Group] = {}
        self.group_of_value: dict[SSAValue, Group] = {}
        for v in values:
            root = self.node(v)
            if root is None:
                continue
            g = by_root.get(root)
            if g is None:
                roles = {k: sorted(ops, key=order.__getitem__) for k, ops in self.roles.get(root, {}).items()}
                g = Group(len(by_root), nn.shape_of(root)[1], sources=roles.get("sources", []),
                          followers=roles.get("followers", []), builders=roles.get("builders", []),
                          reason=self.reasons.get(root))  # fmt: skip
                by_root[root] = g
            g.values.append(v)
            self.group_of_value[v] = g
        return list(by_root.values())

    def group_of(self, value: SSAValue) -> Group | None:
        return self.group_of_value.get(value)

    def freeze_built(self) -> None:
        """A built group whose channels cannot change freezes the groups it is built from."""
        changed = True
        while changed:
            changed = False
            for g in self.groups:
                if not g.builders:
                    continue
                if g.reason is None and len(g.builders) > 1:
                    g.reason = f"is built by both {describe(g.builders[0])} and {describe(g.builders[1])}"
                if g.reason is None and g.sources:
                    source, builder = describe(g.sources[0]), describe(g.builders[0])
                    g.reason = f"joins channels of {source} with those built by {builder}"
                if g.reason is None:
                    continue
                for op in g.builders:
                    for v in op.operands:
                        part = self.group_of(v)
                        if part is not None and part.reason is None:
                            part.reason = f"feeds {describe(op)}, whose channels cannot change: it {g.reason}"
                            changed = True

    # -- kept channels -----------------------------------------------------------------------

    def index_maps(self, keeps: Mapping[int, np.ndarray]) -> dict[int, np.ndarray | None]:
        """For every group, the old channel index of each new channel (None: unchanged),
        given the kept channels of the pruned groups (`keeps`, by group index)."""
        maps: dict[int, np.ndarray | None] = {}

        def of(g: Group) -> np.ndarray | None:
            if g.index not in maps:
                if g.reason is not None:
                    m = None
                elif g.builders:
                    m = self.built_map(g.builders[0], of)
                else:
                    m = keeps.get(g.index)
                maps[g.index] = None if m is None or len(m) == g.channels else np.asarray(m, dtype=np.int64)
            return maps[g.index]

        for g in self.groups:
            of(g)
        return maps

    def built_map(self, op: Operation, of: Callable[[Group], np.ndarray | None]) -> np.ndarray | None:
        def part(v: SSAValue) -> np.ndarray:
            g = self.group_of(v)
            m = of(g) if g is not None else None
            return np.arange(nn.shape_of(v)[1]) if m is None else m

        if isinstance(op, nn.ConcatOp):
            sizes = [nn.shape_of(v)[1] for v in op.inputs]
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            return np.concatenate([offset + part(v) for offset, v in zip(offsets, op.inputs, strict=True)])
        factor = self.flatten_factor[op]
        return (part(op.operands[0])[:, None] * factor + np.arange(factor)).reshape(-1)

    # -- importance of channels ----------------------------------------------------------------

    def scores(self, g: Group, criterion: str) -> tuple[np.ndarray, str]:
        """Importance of each channel of a prunable group (larger: more important) and the
        criterion actually used: L1 / L2 norms of the filters summed over the group's
        sources, or |gamma| summed over its batchnorms (L1 when it has none)."""
        if criterion == "bn-gamma":
            gammas = [self.weight(op.scale) for op in g.followers if isinstance(op, nn.BatchNormOp)]
            if gammas:
                return np.sum([np.abs(np.asarray(x, np.float64)) for x in gammas], axis=0), criterion
            criterion = "l1"
            used = "l1 (no batchnorm)"
        else:
            used = criterion
        total = np.zeros(g.channels)
        for op in g.sources:
            w = self.filters(op)
            total += np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt(np.square(w).sum(axis=1))
        return total, used

    def compensated_bias(self, op: Operation, removed: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """The bias of a consumer (dense conv or gemm) that adds what its `removed` input
        channels contributed on average, given the mean of each input channel: one value
        per output channel, before the output channels are pruned (a gemm's C keeps its
        broadcast shape where it has one, and is divided by beta)."""
        if isinstance(op, nn.Conv2dOp):
            w = self.weight(op.weight)
            assert w is not None
            bias = self.weight(op.bias) if op.bias is not None else np.zeros(w.shape[0], w.dtype)
            assert bias is not None
            return (bias + np.asarray(w[:, removed], np.float64).sum(axis=(2, 3)) @ mean[removed]).astype(w.dtype)
        assert isinstance(op, nn.GemmOp)
        b = self.weight(op.b)
        assert b is not None
        rows = b[:, removed].T if op.trans_b.value.data else b[removed]
        delta = float(op.alpha.value.data) * (mean[removed] @ np.asarray(rows, np.float64))
        beta = float(op.beta.value.data)
        c = self.weight(op.c)
        if c is None or beta == 0.0:  # the caller sets beta to 1 then
            return delta.astype(b.dtype)
        return (c + delta / beta).astype(b.dtype)

    def filters(self, op: Operation) -> np.ndarray:
        """One row per output channel: a conv's filter, a gemm's column of alpha·op(B)."""
        if isinstance(op, nn.Conv2dOp):
            w = self.weight(op.weight)
            assert w is not None
            return np.asarray(w, np.float64).reshape(w.shape[0], -1)
        assert isinstance(op, nn.GemmOp)
        b = self.weight(op.b)
        assert b is not None
        b = np.asarray(b, np.float64) * abs(float(op.alpha.value.data))
        return b if op.trans_b.value.data else b.T
