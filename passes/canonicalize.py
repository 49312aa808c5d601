"""`canonicalize`: simplify the nn graph without changing what it computes.

- `nn.identity` (ONNX Identity, inference Dropout) is dropped;
- an op whose operands are all `nn.weight`s is evaluated with the reference executor's
  kernels and replaced by new weights (constant folding);
- reshape of a reshape becomes one reshape, a reshape to the same shape disappears;
- transpose of a transpose becomes one transpose (none if the permutations cancel);
- unused weights and other dead pure ops are removed;
- xDSL's own canonicalization patterns and folders (builtin, func, arith) run as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.traits import Pure
from xdsl.transforms.canonicalize import CanonicalizationRewritePattern
from xdsl.transforms.dead_code_elimination import region_dce

from backends.reference.kernels import KERNELS, evaluate
from compiler.errors import UnsupportedError
from compiler.program import WeightStore, weights_of
from dialects.nn import IdentityOp, ReshapeOp, TransposeOp, WeightOp, int_list, ints, shape_of
from passes.utils import as_dtype_of, new_weight, weight_array


class RemoveIdentity(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: IdentityOp, rewriter: PatternRewriter, /) -> None:
        rewriter.replace(op, [], [op.input])


@dataclass
class FoldConstantOps(RewritePattern):
    """Evaluate a pure op whose operands are all weights; its results become new weights.
    Any op with a kernel in the reference executor qualifies (other dialects register
    theirs with `register_kernel`)."""

    store: WeightStore

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /) -> None:
        if isinstance(op, WeightOp) or not op.operands or type(op) not in KERNELS or not op.has_trait(Pure):
            return
        arrays = [weight_array(v, self.store) for v in op.operands]
        args = [a for a in arrays if a is not None]
        if len(args) != len(arrays):
            return
        try:
            values = evaluate(op, args)
        except UnsupportedError:
            return  # the executor cannot run this op: leave it to the backend
        name = op.properties.get("name")
        name = name if isinstance(name, StringAttr) else None
        hint = name.data if name is not None else op.name.partition(".")[2]
        new_ops: list[WeightOp] = []
        for i, (value, result) in enumerate(zip(values, op.results, strict=True)):
            array = as_dtype_of(value, result)
            assert array.shape == shape_of(result), f"{op.name}: kernel gave {array.shape}, type says {shape_of(result)}"
            suffix = f".{i}" if len(op.results) > 1 else ""
            new_ops.append(new_weight(self.store, array, hint + suffix, name))
        rewriter.replace(op, new_ops, [w.result for w in new_ops])


class SimplifyReshape(RewritePattern):
    """reshape(x) to x's own shape is x; reshape(reshape(x)) is one reshape of x."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: ReshapeOp, rewriter: PatternRewriter, /) -> None:
        if shape_of(op.input) == shape_of(op.result):
            rewriter.replace(op, [], [op.input])
        elif isinstance(inner := op.input.owner, ReshapeOp):
            merged = ReshapeOp.build(
                operands=[inner.input], result_types=[op.result.type], properties=dict(op.properties)
            )
            rewriter.replace(op, merged)


class SimplifyTranspose(RewritePattern):
    """transpose(transpose(x, p), q) is transpose(x, p∘q); an identity permutation is x."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: TransposeOp, rewriter: PatternRewriter, /) -> None:
        perm = int_list(op.perm)
        if perm == tuple(range(len(perm))):
            rewriter.replace(op, [], [op.input])
        elif isinstance(inner := op.input.owner, TransposeOp):
            first = int_list(inner.perm)
            properties = dict(op.properties) | {"perm": ints([first[p] for p in perm])}
            merged = TransposeOp.build(operands=[inner.input], result_types=[op.result.type], properties=properties)
            rewriter.replace(op, merged)


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns: list[RewritePattern] = [
            RemoveIdentity(),
            FoldConstantOps(weights_of(op)),
            SimplifyReshape(),
            SimplifyTranspose(),
            CanonicalizationRewritePattern(),
        ]
        # The applier erases trivially dead pure ops (weights included) as it goes;
        # region_dce catches what becomes dead later.
        applier = GreedyRewritePatternApplier(patterns, ctx=ctx, folding_enabled=True)
        PatternRewriteWalker(applier, post_walk_func=region_dce).rewrite_module(op)
