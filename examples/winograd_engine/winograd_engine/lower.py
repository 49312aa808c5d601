"""`winograd-conv`: rewrite every `nn.conv2d` that F(2x2, 3x3) computes (the layers the
engine `supports`) into `winograd.conv`, with its weights transformed once, here, into
the weight store. A fused activation becomes the `nn` activation op after it. Convs the
engine refuses, or whose weights are computed rather than constant, stay as they are.

    layerloom-opt model.mlir -p winograd-conv
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Attribute, Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern

from compiler.engines import workload_of
from compiler.program import WeightStore, weights_of
from dialects import nn
from passes.utils import copy_name, erase_unused, new_weight, weight_array, weight_op_of
from winograd_engine.dialect import ConvOp
from winograd_engine.engine import winograd_support
from winograd_engine.transform import transform_weights


def lower_conv(conv: nn.Conv2dOp, store: WeightStore) -> list[Operation] | None:
    """The ops that compute `conv` on a Winograd engine (the transformed weight, the
    winograd.conv, and its activation if one was fused), or None if it cannot."""
    layer = workload_of(conv)
    weights = weight_array(conv.weight, store)
    if layer is None or not winograd_support(layer) or weights is None:
        return None
    old = weight_op_of(conv.weight)
    assert old is not None
    u = new_weight(store, transform_weights(weights), f"{old.handle.data}.winograd", old.node_name)
    u.result.name_hint = conv.weight.name_hint
    properties: dict[str, Attribute] = {"pads": conv.pads}
    operands = [conv.input, u.result] + ([conv.bias] if conv.bias is not None else [])
    wconv = ConvOp.create(operands=operands, result_types=[conv.result.type], properties=properties)
    copy_name(conv, wconv)
    wconv.result.name_hint = conv.result.name_hint
    activation = activation_after(conv, wconv)
    return [u, wconv] + ([activation] if activation is not None else [])


def activation_after(conv: nn.Conv2dOp, wconv: ConvOp) -> Operation | None:
    """The nn op for `conv`'s fused activation, applied to `wconv`'s result."""
    if conv.activation is None:
        return None
    kind = conv.activation.data
    properties: dict[str, Attribute] = {}
    if kind == "relu":
        op_class: type[Operation] = nn.ReluOp
    elif kind == "leaky_relu":
        assert conv.act_alpha is not None  # the verifier requires it
        op_class, properties = nn.LeakyReluOp, {"alpha": conv.act_alpha}
    else:  # clip, the verifier allows no other
        op_class = nn.ClipOp
        properties = {k: v for k, v in (("min", conv.act_min), ("max", conv.act_max)) if v is not None}
    act = op_class.create(operands=[wconv.result], result_types=[conv.result.type], properties=properties)
    if conv.node_name is not None:
        act.properties["name"] = StringAttr(f"{conv.node_name.data}_{kind}")
    return act


@dataclass
class LowerConv(RewritePattern):
    store: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, conv: nn.Conv2dOp, rewriter: PatternRewriter, /) -> None:
        ops = lower_conv(conv, self.store)
        if ops is None:
            return
        rewriter.replace(conv, ops)
        erase_unused(rewriter, [weight_op_of(conv.weight)])


@dataclass(frozen=True)
class WinogradConvPass(ModulePass):
    name = "winograd-conv"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(LowerConv(weights_of(op))).rewrite_module(op)
