"""`fuse-activation`: an `nn.conv2d` or `nn.gemm` followed by `nn.relu`, `nn.clip` or
`nn.leaky_relu` becomes one conv/gemm with `activation = "relu" | "clip" | "leaky_relu"`
(and `act_min`/`act_max` or `act_alpha`). The fused op keeps the conv/gemm's name.

It applies when the conv/gemm has no activation yet and the activation is the only user
of its result (otherwise the un-activated value is still needed elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Attribute, Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern

from dialects.nn import ClipOp, Conv2dOp, GemmOp, LeakyReluOp, ReluOp
from passes.utils import sole_user


def activation_properties(op: Operation) -> dict[str, Attribute] | None:
    """The fused-activation properties equivalent to `op`, or None if it is no activation."""
    if isinstance(op, ReluOp):
        return {"activation": StringAttr("relu")}
    if isinstance(op, LeakyReluOp):
        return {"activation": StringAttr("leaky_relu"), "act_alpha": op.alpha}
    if isinstance(op, ClipOp):
        bounds = {"act_min": op.min, "act_max": op.max}
        return {"activation": StringAttr("clip")} | {k: v for k, v in bounds.items() if v is not None}
    return None


class FuseActivation(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /) -> None:
        properties = activation_properties(op)
        if properties is None:
            return
        producer = op.operands[0].owner
        if not isinstance(producer, Conv2dOp | GemmOp) or producer.activation is not None:
            return
        if sole_user(producer.result) is not op:
            return
        fused = producer.clone()
        fused.properties.update(properties)
        rewriter.replace(op, fused)
        rewriter.erase(producer)


@dataclass(frozen=True)
class FuseActivationPass(ModulePass):
    name = "fuse-activation"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(FuseActivation()).rewrite_module(op)
