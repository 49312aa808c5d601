"""`fold-batchnorm`: fold an inference `nn.batchnorm` into the `nn.conv2d` or `nn.gemm`
that feeds it, as new weight and bias arrays.

batchnorm(y) = s * y + t per channel, with s = scale / sqrt(var + eps) and
t = bias - s * mean. For a conv (channel = output channel, any group count):
W'[m] = s[m] * W[m], b'[m] = s[m] * b[m] + t[m]. For a gemm (channel = output column n):
B' scales column n of op(B) by s[n], C' = s * beta * C + t, beta' = 1.

It applies when the conv/gemm has no fused activation, its result is used by the batchnorm
only, and its weight, its bias (if any) and the four batchnorm parameters are all weights.
Otherwise the batchnorm stays, which is still correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern

from compiler.program import WeightStore, weights_of
from dialects.nn import BatchNormOp, Conv2dOp, GemmOp, WeightOp
from passes.utils import as_dtype_of, erase_unused, new_weight, sole_user, weight_array, weight_op_of


@dataclass
class FoldBatchNorm(RewritePattern):
    store: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: BatchNormOp, rewriter: PatternRewriter, /) -> None:
        producer = bn.input.owner
        if not isinstance(producer, Conv2dOp | GemmOp) or producer.activation is not None:
            return
        if sole_user(producer.result) is not bn:
            return
        params = [weight_array(v, self.store) for v in (bn.scale, bn.bias, bn.mean, bn.var)]
        if any(p is None for p in params):
            return
        scale, bias, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        s = scale / np.sqrt(var + bn.epsilon.value.data)
        t = bias - s * mean
        folded = self.fold_conv(producer, s, t) if isinstance(producer, Conv2dOp) else self.fold_gemm(producer, s, t)
        if folded is None:
            return
        rewriter.replace(bn, folded)
        erase_unused(rewriter, [producer, *map(weight_op_of, producer.operands), *map(weight_op_of, bn.operands)])

    def fold_conv(self, conv: Conv2dOp, s: np.ndarray, t: np.ndarray) -> list[Operation] | None:
        w = weight_array(conv.weight, self.store)
        b = weight_array(conv.bias, self.store) if conv.bias is not None else np.zeros(s.shape)
        if w is None or b is None:
            return None
        w_new = as_dtype_of(w * s[:, None, None, None], conv.weight)
        b_new = as_dtype_of(b * s + t, conv.weight)
        w_op, b_op = self.weights(conv, conv.weight, conv.bias, w_new, b_new)
        new_conv = Conv2dOp.build(
            operands=[conv.input, w_op.result, b_op.result],
            result_types=[conv.result.type],
            properties=dict(conv.properties),
        )
        new_conv.result.name_hint = conv.result.name_hint
        return [w_op, b_op, new_conv]

    def fold_gemm(self, gemm: GemmOp, s: np.ndarray, t: np.ndarray) -> list[Operation] | None:
        b = weight_array(gemm.b, self.store)
        c = weight_array(gemm.c, self.store) if gemm.c is not None else np.zeros(s.shape)
        if b is None or c is None:
            return None
        # Column n of op(B) is row n of B when B is transposed.
        b_new = as_dtype_of(b * (s[:, None] if gemm.trans_b.value.data else s[None, :]), gemm.b)
        c_new = as_dtype_of(gemm.beta.value.data * c * s + t, gemm.b)
        b_op, c_op = self.weights(gemm, gemm.b, gemm.c, b_new, c_new)
        properties = dict(gemm.properties) | {"beta": FloatAttr(1.0, gemm.beta.type)}
        new_gemm = GemmOp.build(
            operands=[gemm.a, b_op.result, c_op.result], result_types=[gemm.result.type], properties=properties
        )
        new_gemm.result.name_hint = gemm.result.name_hint
        return [b_op, c_op, new_gemm]

    def weights(
        self, op: Conv2dOp | GemmOp, old_weight: SSAValue, old_bias: SSAValue | None, weight: np.ndarray, bias: np.ndarray
    ) -> tuple[WeightOp, WeightOp]:
        """New weight ops for the folded weight and bias, named after the ones they replace."""
        old_w, old_b = weight_op_of(old_weight), weight_op_of(old_bias)
        assert old_w is not None
        w_hint = old_w.handle.data
        b_hint = old_b.handle.data if old_b is not None else f"{op.layer_name or w_hint}.bias"
        w_op = new_weight(self.store, weight, f"{w_hint}.bn", old_w.node_name)
        b_op = new_weight(self.store, bias, f"{b_hint}.bn", old_b.node_name if old_b is not None else None)
        # Keep the SSA names readable (the rewriter would name everything after the batchnorm).
        w_op.result.name_hint = old_weight.name_hint
        b_op.result.name_hint = old_bias.name_hint if old_bias is not None else "bias"
        return w_op, b_op


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    name = "fold-batchnorm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FoldBatchNorm(weights_of(op))).rewrite_module(op)
