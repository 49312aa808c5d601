"""The `winograd` dialect: layers mapped on a Winograd engine.

    %y = winograd.conv %x, %u, %b {name = "res2a_branch2b", pads = array<i64: 1, 1, 1, 1>}
         : (tensor<1x64x56x56xf32>, tensor<4x4x64x64xf32>, tensor<64xf32>) -> tensor<1x64x56x56xf32>

`%u` is the transformed weight U = G g G^T, laid out 4 x 4 x M x C (one M x C matrix per
position of the 4x4 tile); the stride is 1 and the kernel 3x3 by construction. Loading
this module also gives the op a reference-executor kernel and a rule for layerloom's
per-layer analysis, so a lowered module still runs and reports.
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, StringAttr, TensorType
from xdsl.ir import Dialect, Operation
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from backends.reference.kernels import register_kernel
from compiler.analysis import register_layer_rule
from dialects.nn import element_type_of, int_list, is_float, shape_of
from winograd_engine.transform import KERNEL, OUT, TILE, winograd_conv2d


@irdl_op_definition
class ConvOp(IRDLOperation):
    """A dense 3x3 stride-1 convolution computed as F(2x2, 3x3); pads = (top, left,
    bottom, right); NCHW input, transformed weights 4 x 4 x M x C, optional bias (M)."""

    name = "winograd.conv"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    pads = prop_def(DenseArrayBase)
    node_name = opt_prop_def(StringAttr, prop_name="name")
    result = result_def(TensorType)

    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "operands attr-dict `:` functional-type(operands, results)"

    @property
    def layer_name(self) -> str:
        return self.node_name.data if self.node_name is not None else ""

    def verify_(self) -> None:
        where = f" '{self.layer_name}'" if self.layer_name else ""

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise VerifyException(f"{self.name}{where}: {message}")

        x, u, y = shape_of(self.input), shape_of(self.weight), shape_of(self.result)
        pads = int_list(self.pads)
        check(len(x) == 4, f"input must be NCHW, got shape {x}")
        check(len(pads) == 4 and min(pads) >= 0, f"pads {pads} must be four non-negative integers")
        check(len(u) == 4 and u[:2] == (TILE, TILE), f"weight must be transformed, {TILE}x{TILE}xMxC, got {u}")
        check(u[3] == x[1], f"weight has {u[3]} input channels, the input {x[1]}")
        types = {element_type_of(v) for v in (self.input, self.weight, self.result)}
        check(len(types) == 1 and is_float(next(iter(types))), "input, weight and result must be one float type")
        if self.bias is not None:
            check(shape_of(self.bias) == (u[2],), f"bias must have {u[2]} values, got shape {shape_of(self.bias)}")
        top, left, bottom, right = pads
        expected = (x[0], u[2], x[2] + top + bottom - KERNEL + 1, x[3] + left + right - KERNEL + 1)
        check(min(expected) >= 1 and y == expected, f"result shape {y} should be {expected}")


Winograd = Dialect("winograd", [ConvOp])


def _kernel(op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
    assert isinstance(op, ConvOp)
    x, u, *bias = args
    top, left, bottom, right = int_list(op.pads)
    return [winograd_conv2d(x, u, bias[0] if bias else None, (top, left, bottom, right))]


def _layer_rule(op: Operation) -> tuple[str, int]:
    """Kind `winograd_conv`; MACs are the multiplications the engine does: 16 per 2x2
    output block and channel pair."""
    assert isinstance(op, ConvOp)
    n, m, e, f = shape_of(op.result)
    blocks = math.ceil(e / OUT) * math.ceil(f / OUT)
    return "winograd_conv", n * blocks * TILE * TILE * m * shape_of(op.input)[1]


register_kernel(ConvOp, _kernel)
register_layer_rule(ConvOp, _layer_rule)
