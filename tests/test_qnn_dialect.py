"""The qnn dialect: well-formed IR of every op parses, verifies and round-trips; each
verifier rule rejects the IR it exists for, with the op and the reason; and the
parameters an op hands to intmath compute the spec's worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import LayerloomError
from compiler.program import print_module
from compiler.quant import intmath as im
from compiler.registry import parse_module
from dialects import qnn


def tt(shape: tuple[int, ...], elt: str) -> str:
    return f"tensor<{'x'.join(map(str, shape))}x{elt}>"


def props(p: dict[str, str]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in p.items() if v is not None)


def arr(kind: str, values: list[float] | list[int]) -> str:
    return f"array<{kind}: {', '.join(map(repr, values))}>"


def quantize(value: str, shape: tuple[int, ...], scale: float, zp: int, elt: str = "i8") -> str:
    return (f"{value} = qnn.quantize %x {{scale = {scale!r} : f64, zero_point = {zp} : i64}} : "
            f"({tt(shape, 'f32')}) -> {tt(shape, elt)}")


def func(body: list[str], x_shape: tuple[int, ...], result: str, result_type: str) -> str:
    lines = "\n    ".join(body)
    return (f"func.func @main(%x: {tt(x_shape, 'f32')}) -> {result_type} {{\n    {lines}\n"
            f"    func.return {result} : {result_type}\n}}")


# ---------------------------------------------------------------------------------------
# Well-formed IR of each op (the bases that the bad cases below modify)
# ---------------------------------------------------------------------------------------

X = (1, 3, 8, 8)
CONV_POW2 = {
    "name": '"conv1"', "strides": "array<i64: 1, 1>", "pads": "array<i64: 1, 1, 1, 1>",
    "dilations": "array<i64: 1, 1>", "group": "1 : i64",
    "input_scale": "0.0625 : f64", "input_zero_point": "0 : i64", "weight_scales": "array<f64: 0.0078125>",
    "scale": "0.125 : f64", "zero_point": "0 : i64", "scheme": '"pow2"', "shifts": "array<i64: 8>",
    "activation": '"relu"', "clamp_min": "0 : i64",
}
# Spec example F1 per channel: s_x = 0.02, s_w = 0.005 (and 0.01), s_y = 0.05, z_y = -5.
CONV_FIXED = CONV_POW2 | {
    "input_scale": "0.02 : f64", "input_zero_point": "3 : i64", "weight_scales": "array<f64: 0.005, 0.01>",
    "scale": "0.05 : f64", "zero_point": "-5 : i64", "scheme": '"fixed"',
    "multipliers": arr("i64", [1099511628, 1099511628]), "shifts": arr("i64", [8, 7]),
    "activation": None, "clamp_min": None,
}


def conv_module(p: dict[str, str], w: tuple[int, ...] = (4, 3, 3, 3), w_elt: str = "i8", bias: str | None = "tensor<4xi32>",
                out_elt: str = "i8", x_scale: float = 0.0625, x_zp: int = 0) -> str:
    out = (1, w[0], 8, 8)
    operands = "%q, %w" + (", %b" if bias else "")
    types = f"{tt(X, 'i8')}, {tt(w, w_elt)}" + (f", {bias}" if bias else "")
    body = [quantize("%q", X, x_scale, x_zp), f'%w = nn.weight "w" : {tt(w, w_elt)}']
    if bias:
        body.append(f'%b = nn.weight "b" : {bias}')
    body.append(f"%c = qnn.conv2d {operands} {{{props(p)}}} : ({types}) -> {tt(out, out_elt)}")
    return func(body, X, "%c", tt(out, out_elt))


def fixed_conv_module(p: dict[str, str] = CONV_FIXED, **kw: object) -> str:
    return conv_module(p, w=(2, 3, 3, 3), bias="tensor<2xi32>", x_scale=0.02, x_zp=3, **kw)  # type: ignore[arg-type]


def add_module(p: dict[str, str], b_shape: tuple[int, ...] = X) -> str:
    b = quantize("%b", X, 2.0**-3, 0) if b_shape == X else f'%b = nn.weight "b" : {tt(b_shape, "i8")}'
    body = [quantize("%a", X, 2.0**-5, 0), b,
            f"%y = qnn.add %a, %b {{{props(p)}}} : ({tt(X, 'i8')}, {tt(b_shape, 'i8')}) -> {tt(X, 'i8')}"]
    return func(body, X, "%y", tt(X, "i8"))


ADD_POW2 = {  # spec example A1: f_a = 5, f_b = 3, f_y = 4
    "input_scales": "array<f64: 0.03125, 0.125>", "input_zero_points": "array<i64: 0, 0>",
    "scheme": '"pow2"', "operand_shifts": "array<i64: 0, -2>", "shifts": "array<i64: 1>",
    "scale": "0.0625 : f64", "zero_point": "0 : i64",
}


def concat_module(p: dict[str, str]) -> str:
    out = (1, 6, 8, 8)
    body = [quantize("%a", X, 2.0**-6, 0), quantize("%b", X, 2.0**-4, 0),
            f"%y = qnn.concat %a, %b {{{props(p)}}} : ({tt(X, 'i8')}, {tt(X, 'i8')}) -> {tt(out, 'i8')}"]
    return func(body, X, "%y", tt(out, "i8"))


CONCAT_POW2 = {  # spec example C1: the first operand (f = 6) shifts by 2, the second is copied
    "axis": "1 : i64", "input_scales": "array<f64: 0.015625, 0.0625>", "input_zero_points": "array<i64: 0, 0>",
    "scheme": '"pow2"', "shifts": "array<i64: 2, 0>", "scale": "0.0625 : f64", "zero_point": "0 : i64",
}


def pool_module(p: dict[str, str], op: str = "qnn.pool", out: tuple[int, ...] = (1, 3, 8, 8)) -> str:
    body = [quantize("%q", X, 0.0625, 0), f"%y = {op} %q {{{props(p)}}} : ({tt(X, 'i8')}) -> {tt(out, 'i8')}"]
    return func(body, X, "%y", tt(out, "i8"))


POOL_GEOMETRY = {
    "kernel": "array<i64: 3, 3>", "strides": "array<i64: 1, 1>", "pads": "array<i64: 1, 1, 1, 1>",
    "dilations": "array<i64: 1, 1>", "ceil_mode": "0 : i64", "count_include_pad": "0 : i64",
}
QUANT_SAME = {"input_scale": "0.0625 : f64", "input_zero_point": "0 : i64", "scale": "0.0625 : f64", "zero_point": "0 : i64"}
MAX_POOL = POOL_GEOMETRY | QUANT_SAME | {"kind": '"max"'}
POW2_DIVISORS = [im.pow2_divisor(n) for n in range(1, 10)]
AVG_POOL_POW2 = POOL_GEOMETRY | QUANT_SAME | {
    "kind": '"avg"', "scheme": '"pow2"',
    "multipliers": arr("i64", [m for m, _ in POW2_DIVISORS]), "shifts": arr("i64", [s for _, s in POW2_DIVISORS]),
}
GLOBAL_AVG_FIXED = QUANT_SAME | {
    "kind": '"avg"', "scheme": '"fixed"',
    "multipliers": arr("i64", [im.quantize_multiplier(1 / 64)[0]]), "shifts": arr("i64", [im.quantize_multiplier(1 / 64)[1]]),
}


def lut_module(table: tuple[int, ...] = (256,), table_elt: str = "i8") -> str:
    body = [quantize("%q", X, 0.0625, 0), f'%t = nn.weight "sigmoid_table" : {tt(table, table_elt)}',
            f"%y = qnn.lut %q, %t {{activation = \"sigmoid\", {props(QUANT_SAME | {'scale': '0.0078125 : f64'})}}} : "
            f"({tt(X, 'i8')}, {tt(table, table_elt)}) -> {tt(X, 'i8')}"]
    return func(body, X, "%y", tt(X, "i8"))


def gemm_module(p: dict[str, str], a_elt: str = "i8", through_reshape_zp: int = 0) -> str:
    body = [quantize("%q", X, 0.02, through_reshape_zp),
            f"%f = nn.reshape %q : ({tt(X, 'i8')}) -> {tt((1, 192), 'i8')}",
            f'%w = nn.weight "fc.w" : {tt((3, 192), "i8")}', f'%b = nn.weight "fc.b" : {tt((3,), "i32")}',
            f"%y = qnn.gemm %f, %w, %b {{{props(p)}}} : ({tt((1, 192), a_elt)}, {tt((3, 192), 'i8')}, {tt((3,), 'i32')}) "
            f"-> {tt((1, 3), 'i8')}"]
    return func(body, X, "%y", tt((1, 3), "i8"))


GEMM_FIXED = {
    "name": '"fc"', "trans_b": "1 : i64", "input_scale": "0.02 : f64", "input_zero_point": "0 : i64",
    "weight_scales": "array<f64: 0.005, 0.005, 0.01>", "scale": "0.05 : f64", "zero_point": "0 : i64",
    "scheme": '"fixed"', "multipliers": arr("i64", [1099511628] * 3), "shifts": arr("i64", [8, 8, 7]),
}


def matmul_integer_module() -> str:
    """MatMulInteger: uint8 operands with zero points, the int32 accumulator as result."""
    a, b = (2, 4, 5), (5, 6)
    body = [quantize("%q", a, 0.1, 128, "ui8"), f'%w = nn.weight "b" : {tt(b, "ui8")}',
            "%y = qnn.matmul %q, %w {input_scale = 0.1 : f64, input_zero_point = 128 : i64, "
            "weight_scales = array<f64: 0.2>, weight_zero_point = 7 : i64} : "
            f"({tt(a, 'ui8')}, {tt(b, 'ui8')}) -> {tt((2, 4, 6), 'i32')}"]
    return func(body, a, "%y", tt((2, 4, 6), "i32"))


def requantize_module(p: dict[str, str]) -> str:
    body = [quantize("%q", X, 0.25, 0), f"%y = qnn.requantize %q {{{props(p)}}} : ({tt(X, 'i8')}) -> {tt(X, 'ui8')}"]
    return func(body, X, "%y", tt(X, "ui8"))


REQUANTIZE_FIXED = {  # 0.25 -> 1.0 is M = 0.25 (spec example F2), to uint8 with zero point 128
    "input_scale": "0.25 : f64", "input_zero_point": "0 : i64", "scale": "1.0 : f64", "zero_point": "128 : i64",
    "scheme": '"fixed"', "multipliers": "array<i64: 1073741824>", "shifts": "array<i64: 1>",
}


def dequantize_module(zp: int = 0, result: str = "f32") -> str:
    body = [quantize("%q", X, 0.5, 3), f"%y = qnn.dequantize %q {{scale = 0.5 : f64, zero_point = {zp} : i64}} : "
            f"({tt(X, 'i8')}) -> {tt(X, result)}"]
    return func(body, X, "%y", tt(X, result))


GOOD = {
    "conv-pow2-relu": conv_module(CONV_POW2),
    "conv-fixed-per-channel": fixed_conv_module(),
    "conv-leaky-pow2": conv_module(CONV_POW2 | {
        "activation": '"leaky_relu"', "act_alpha": "0.1 : f64", "clamp_min": None,
        "neg_multipliers": "array<i64: 6554>", "neg_shifts": "array<i64: 24>"}),
    "conv-leaky-fixed": fixed_conv_module(CONV_FIXED | {
        "activation": '"leaky_relu"', "act_alpha": "0.1 : f64",
        "neg_multipliers": arr("i64", [1759218604] * 2), "neg_shifts": arr("i64", [12, 11])}),
    "conv-integer": conv_module({k: v for k, v in CONV_POW2.items() if k in
                                 ("strides", "pads", "dilations", "group", "input_scale", "input_zero_point", "weight_scales")},
                                out_elt="i32", bias=None),
    "add-pow2": add_module(ADD_POW2),
    "add-broadcast": add_module(ADD_POW2, b_shape=(1, 3, 1, 1)),
    "concat-pow2": concat_module(CONCAT_POW2),
    "max-pool": pool_module(MAX_POOL),
    "avg-pool-pow2": pool_module(AVG_POOL_POW2),
    "global-avg-fixed": pool_module(GLOBAL_AVG_FIXED, "qnn.global_pool", (1, 3, 1, 1)),
    "lut": lut_module(),
    "gemm-fixed": gemm_module(GEMM_FIXED),
    "matmul-integer": matmul_integer_module(),
    "requantize-to-uint8": requantize_module(REQUANTIZE_FIXED),
    "dequantize": dequantize_module(zp=3),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_well_formed_ir_verifies_and_round_trips(name: str) -> None:
    module = parse_module(GOOD[name], name)
    text = print_module(module)
    assert print_module(parse_module(text, name)) == text


def test_every_op_of_the_dialect_is_covered() -> None:
    seen = {op.name for text in GOOD.values() for op in parse_module(text).walk() if op.name.startswith("qnn.")}
    assert seen == {op.name for op in qnn.QNN.operations}


# ---------------------------------------------------------------------------------------
# Each verifier rule, on IR that breaks it
# ---------------------------------------------------------------------------------------

BAD = {
    "scale-not-positive": (conv_module(CONV_POW2 | {"scale": "-1.0 : f64"}), "scale -1.0 must be positive"),
    "zero-point-outside-type": (conv_module(CONV_POW2 | {"zero_point": "200 : i64"}), "zero_point 200 is outside the range [-128, 127]"),
    "uint8-zero-point-negative": (requantize_module(REQUANTIZE_FIXED | {"zero_point": "-1 : i64"}), "outside the range [0, 255]"),
    "unknown-scheme": (conv_module(CONV_POW2 | {"scheme": '"float"'}), "scheme must be one of"),
    "shift-disagrees-with-scales": (conv_module(CONV_POW2 | {"shifts": "array<i64: 7>"}),
                                    "multipliers[0] stands for 0.0078125 but the scales call for 0.00390625"),
    "pow2-needs-pow2-scales": (conv_module(CONV_POW2 | {"scale": "0.1 : f64"}), "scheme pow2 needs power-of-two scales"),
    "pow2-needs-zero-zp": (conv_module(CONV_POW2 | {"zero_point": "3 : i64", "clamp_min": "3 : i64"}), "scheme pow2 needs zero points 0"),
    "pow2-shift-range": (conv_module(CONV_POW2 | {"shifts": "array<i64: 60>"}), "pow2 shifts must lie in [-16, 48]"),
    "shift-count-per-channel": (conv_module(CONV_POW2 | {"shifts": "array<i64: 8, 8, 8>"}), "3 shifts, expected 1 or 4"),
    "weight-scale-count": (conv_module(CONV_POW2 | {"weight_scales": "array<f64: 0.0078125, 0.0078125>"}),
                           "2 weight_scales for 4 output channels"),
    "fixed-needs-multipliers": (fixed_conv_module(CONV_FIXED | {"multipliers": None}), "scheme fixed needs multipliers"),
    "fixed-multiplier-range": (fixed_conv_module(CONV_FIXED | {"multipliers": "array<i64: 12345, 12345>"}),
                               "fixed multipliers must lie in [2^30, 2^31)"),
    "fixed-shift-range": (fixed_conv_module(CONV_FIXED | {"shifts": "array<i64: 40, 40>"}), "fixed shifts must lie in [-31, 31]"),
    "fixed-multiplier-wrong-channel": (fixed_conv_module(CONV_FIXED | {"shifts": "array<i64: 8, 8>"}), "multipliers[1] stands for"),
    "multiplier-count": (fixed_conv_module(CONV_FIXED | {"multipliers": "array<i64: 1099511628>"}), "1 multipliers for 2 shifts"),
    "bias-not-int32": (conv_module(CONV_POW2, bias="tensor<4xi8>"), "bias must be i32"),
    "bias-per-channel": (conv_module(CONV_POW2, bias="tensor<3xi32>"), "bias shape (3,) should be (4,)"),
    "weight-not-8-bit": (conv_module(CONV_POW2, w_elt="i32"), "weight must be i8 or ui8"),
    "i32-result-with-scale": (conv_module(CONV_POW2, out_elt="i32"), "an i32 result takes no scale or zero_point"),
    "i32-result-with-requant": (conv_module({k: v for k, v in CONV_POW2.items() if k not in ("scale", "zero_point")}, out_elt="i32"),
                                "an i32 result is the accumulator: takes no scheme, shifts, clamp_min, activation"),
    "accumulator-overflow": (conv_module(CONV_POW2, w=(4, 3, 110, 110)).replace("1, 1, 1, 1", "54, 54, 55, 55"),
                             "reduction length 36300 exceeds 32768"),
    "leaky-without-activation": (conv_module(CONV_POW2 | {"neg_shifts": "array<i64: 24>", "neg_multipliers": "array<i64: 6554>"}),
                                 'neg_shifts go with activation = "leaky_relu"'),
    "leaky-slope-disagrees": (conv_module(CONV_POW2 | {"activation": '"leaky_relu"', "act_alpha": "0.2 : f64", "clamp_min": None,
                                                       "neg_multipliers": "array<i64: 6554>", "neg_shifts": "array<i64: 24>"}),
                              "neg_multipliers[0] stands for"),
    "unknown-activation": (conv_module(CONV_POW2 | {"activation": '"swish"'}), "unknown activation 'swish'"),
    "empty-clamp": (conv_module(CONV_POW2 | {"clamp_min": "10 : i64", "clamp_max": "5 : i64"}), "clamp range [10, 5] is empty"),
    "input-disagrees-with-producer": (conv_module(CONV_POW2 | {"input_scale": "0.125 : f64"}),
                                      "input quantization (scale 0.125, zero point 0) differs from its producer's (scale 0.0625"),
    "producer-seen-through-reshape": (gemm_module(GEMM_FIXED, through_reshape_zp=4), "differs from its producer's"),
    "input-not-quantized": (lut_module().replace("qnn.lut %q", "qnn.lut %x").replace("(tensor<1x3x8x8xi8>, tensor<256xi8>)",
                                                                                    "(tensor<1x3x8x8xf32>, tensor<256xi8>)"),
                            "input must be i8 or ui8, got f32"),
    "add-operand-shift-disagrees": (add_module(ADD_POW2 | {"operand_shifts": "array<i64: 0, -3>"}), "operand_multipliers[1] stands for"),
    "add-output-shift-disagrees": (add_module(ADD_POW2 | {"shifts": "array<i64: 2>"}), "multipliers[0] stands for"),
    "add-scale-count": (add_module(ADD_POW2 | {"input_scales": "array<f64: 0.03125>"}), "input_scales and input_zero_points need 2 entries"),
    "add-shapes": (add_module(ADD_POW2, b_shape=(1, 2, 8, 8)), "do not broadcast"),
    "concat-one-shift-per-operand": (concat_module(CONCAT_POW2 | {"shifts": "array<i64: 2>"}), "1 shifts, expected 2"),
    "max-pool-keeps-scale": (pool_module(MAX_POOL | {"scale": "0.125 : f64"}), "max pooling keeps the input's scale and zero point"),
    "max-pool-no-requant": (pool_module(MAX_POOL | {"scheme": '"pow2"', "shifts": "array<i64: 0>"}), "max pooling: takes no scheme, shifts"),
    "avg-pool-one-set-per-count": (pool_module(AVG_POOL_POW2 | {"shifts": arr("i64", [s for _, s in POW2_DIVISORS[:8]])}),
                                   "8 shifts, expected 9"),
    "avg-pool-divisor": (pool_module(AVG_POOL_POW2 | {"multipliers": arr("i64", [1] * 9)}), "multipliers[2] stands for 7.62939453e-06"),
    "global-avg-divisor": (pool_module(GLOBAL_AVG_FIXED | {"shifts": "array<i64: 6>"}, "qnn.global_pool", (1, 3, 1, 1)),
                           "multipliers[0] stands for"),
    "lut-table-size": (lut_module(table=(128,)), "table shape (128,) should be (256,)"),
    "lut-table-type": (lut_module(table_elt="ui8"), "table element type ui8 differs from the result's i8"),
    "dequantize-to-int": (dequantize_module(zp=3, result="i32"), "result must be float"),
    "dequantize-disagrees-with-producer": (dequantize_module(zp=0), "input quantization (scale 0.5, zero point 0) differs"),
    "requantize-disagrees": (requantize_module(REQUANTIZE_FIXED | {"scale": "2.0 : f64"}), "multipliers[0] stands for 0.25"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_verifier_rejects(name: str) -> None:
    text, message = BAD[name]
    with pytest.raises(LayerloomError) as e:
        parse_module(text, name)
    assert message in str(e.value)
    assert "IR does not verify: qnn." in str(e.value)


def test_errors_name_the_layer() -> None:
    with pytest.raises(LayerloomError, match="qnn.conv2d 'conv1': "):
        parse_module(BAD["unknown-scheme"][0])


# ---------------------------------------------------------------------------------------
# The parameters an op carries compute the spec's worked examples
# ---------------------------------------------------------------------------------------


def first(text: str, op_type: type) -> object:
    return next(op for op in parse_module(text).walk() if isinstance(op, op_type))


def test_conv_output_stage_is_spec_example_f1_per_channel() -> None:
    conv = first(GOOD["conv-fixed-per-channel"], qnn.Conv2dOp)
    assert isinstance(conv, qnn.Conv2dOp)
    stage = conv.output_stage().along(4, 1)
    acc = np.stack([np.full((2, 2), 1000), np.full((2, 2), 1000)])[None]  # channel 1 has twice the multiplier
    y = stage(acc)
    assert (y[0, 0] == -3).all() and (y[0, 1] == -1).all()  # 1000 * 0.002 - 5 and 1000 * 0.004 - 5
    channel0 = conv.output_stage().along(3, 1)(np.array([[[1000, -1000, 2250, 100000]] * 2]))[0, 0]
    assert channel0.tolist() == [-3, -7, 0, 127]


def test_fused_relu_and_leaky_reach_the_output_stage() -> None:
    relu = first(GOOD["conv-pow2-relu"], qnn.Conv2dOp)
    assert isinstance(relu, qnn.Conv2dOp)
    assert relu.output_stage()([1000, -1000, 40000]).tolist() == [4, 0, 127]  # spec P1
    leaky = first(GOOD["conv-leaky-pow2"], qnn.Conv2dOp)
    assert isinstance(leaky, qnn.Conv2dOp)
    assert leaky.output_stage()([-1000, -5000, 1000]).tolist() == [0, -2, 4]  # spec L1


def test_add_parameters_are_spec_example_a1() -> None:
    add = first(GOOD["add-pow2"], qnn.AddOp)
    assert isinstance(add, qnn.AddOp)
    (sa, za), (sb, zb) = add.input_quantizations()
    y = im.add([37, 100], [-9, 20], (za, zb), add.operand_requants(), add.output_stage())
    assert y.tolist() == [1, 90]


def test_concat_stages_are_spec_example_c1() -> None:
    concat = first(GOOD["concat-pow2"], qnn.ConcatOp)
    assert isinstance(concat, qnn.ConcatOp)
    first_operand, second_operand = concat.operand_stages()
    assert im.rescale([-6, 37], 0, first_operand).tolist() == [-1, 9]
    assert im.rescale([-6, 37], 0, second_operand).tolist() == [-6, 37]  # same scale: copied


def test_average_pool_table_is_spec_example_v1() -> None:
    pool = first(GOOD["avg-pool-pow2"], qnn.PoolOp)
    assert isinstance(pool, qnn.PoolOp)
    assert im.average_divide([100, -105, 60], [9, 9, 6], pool.output_stage()).tolist() == [11, -12, 10]


def test_requantize_to_uint8_is_spec_example_f2() -> None:
    op = first(GOOD["requantize-to-uint8"], qnn.RequantizeOp)
    assert isinstance(op, qnn.RequantizeOp)
    assert op.clamp_range() == (0, 255)
    assert im.rescale([10, -10, 1000], 0, op.output_stage()).tolist() == [131, 125, 255]


def test_type_ranges() -> None:
    assert qnn.type_range(qnn.I8) == (-128, 127)
    assert qnn.type_range(qnn.UI8) == (0, 255)
    assert qnn.type_range(qnn.I32) == im.INT32_RANGE
    assert qnn.is_quantized(qnn.UI8) and not qnn.is_quantized(qnn.I32)
