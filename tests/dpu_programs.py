"""DPU programs beside the qnn ops they implement, for checking the simulator (and the
lowering) against the reference executor bit for bit.

A `Case` is a program built with backends/dpu/builder.py, the arrays it reads from DDR
and the output the reference executor computes for the same qnn ops. The op makers give
random pow2 layers with shifts chosen so that outputs use the int8 range (not all
saturated); `random_order` and `without_token` make the schedules and broken programs of
the token-safety tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute, Block, Operation

from backends.dpu import builder as bld
from backends.dpu.isa import QUEUES, DpuConfig, Instruction, Token, tokens
from backends.dpu.memory import DdrImage, FeatureMap
from backends.dpu.simulator import SimResult, simulate
from backends.reference import evaluate
from compiler.quant import intmath as im
from compiler.tensors import tensor_type
from dialects import qnn
from dialects.nn import f64attr, floats, i64attr, ints

ACTIVATIONS = ("none", "relu", "relu6", "clip", "leaky")


# ---------------------------------------------------------------------------------------
# qnn ops (pow2, int8)
# ---------------------------------------------------------------------------------------


def qnn_op(op_class: type[Operation], operands: Sequence[tuple[tuple[int, ...], Any]],
           result: tuple[tuple[int, ...], Any], **properties: Attribute | None) -> Operation:
    """`op_class` on block arguments of the given (shape, dtype)s, verified."""
    block = Block(arg_types=[tensor_type(shape, dtype) for shape, dtype in operands])
    args: list[Any] = list(block.args)
    if op_class is qnn.ConcatOp:
        args = [args]
    args += [[]] * (len(op_class.get_irdl_definition().operands) - len(args))  # absent optional operands
    props = {k: v for k, v in properties.items() if v is not None}
    op = op_class.build(operands=args, result_types=[tensor_type(*result)], properties=props)
    op.verify()
    return op


def scale(f: int) -> Attribute:
    return f64attr(2.0**-f)


def activation_props(act: str, shifts: np.ndarray | None = None) -> dict[str, Attribute]:
    if act == "none":
        return {}
    if act == "relu":
        return {"activation": StringAttr("relu"), "clamp_min": i64attr(0)}
    if act == "relu6":  # f_y = 4: 6.0 is 96
        return {"activation": StringAttr("relu6"), "clamp_min": i64attr(0), "clamp_max": i64attr(96)}
    if act == "clip":
        return {"activation": StringAttr("clip"), "clamp_min": i64attr(-20), "clamp_max": i64attr(60)}
    assert act == "leaky" and shifts is not None
    return {"activation": StringAttr("leaky_relu"), "act_alpha": f64attr(0.1),
            "neg_multipliers": ints([im.pow2_alpha(0.1)] * len(shifts)), "neg_shifts": ints(list(shifts + 16))}


def conv_shifts(rng: np.random.Generator, taps: int, channels: int) -> np.ndarray:
    """Per-channel shifts that bring the accumulator of `taps` random int8 products to a
    standard deviation of about 40."""
    spread = math.sqrt(taps) * 73.9 * 73.3  # std of uniform int8 values times int8 weights
    return np.clip(np.round(math.log2(spread / 40)) + rng.integers(-1, 2, channels), 0, 32).astype(np.int64)


def pow2_conv(rng: np.random.Generator, c: int, h: int, w: int, oc: int, kernel: tuple[int, int],
              stride: tuple[int, int] = (1, 1), pads: tuple[int, int, int, int] = (0, 0, 0, 0),
              dilation: tuple[int, int] = (1, 1), depthwise: bool = False, act: str = "none",
              f_x: int = 0, f_y: int = 0) -> tuple[Operation, np.ndarray, np.ndarray]:
    """A random qnn.conv2d (depthwise when asked: oc = c) with its weights and bias."""
    icg = 1 if depthwise else c
    weights = rng.integers(-127, 128, (oc, icg, *kernel)).astype(np.int8)
    shifts = conv_shifts(rng, icg * kernel[0] * kernel[1], oc)
    bias = rng.integers(-20, 21, oc) << shifts
    f_w = shifts - f_x + f_y
    oh = (h + pads[0] + pads[2] - (kernel[0] - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (w + pads[1] + pads[3] - (kernel[1] - 1) * dilation[1] - 1) // stride[1] + 1
    op = qnn_op(qnn.Conv2dOp, [((1, c, h, w), np.int8), (weights.shape, np.int8), ((oc,), np.int32)],
                ((1, oc, oh, ow), np.int8), strides=ints(list(stride)), pads=ints(list(pads)),
                dilations=ints(list(dilation)), group=i64attr(c if depthwise else 1), input_scale=scale(f_x),
                input_zero_point=i64attr(0), weight_scales=floats([2.0 ** -int(f) for f in f_w]), scale=scale(f_y),
                zero_point=i64attr(0), scheme=StringAttr("pow2"), shifts=ints(list(shifts)),
                **activation_props(act, shifts))
    return op, weights, bias.astype(np.int32)


def pool_props(kind: str, n: int) -> dict[str, Attribute]:
    """Quantization of a pool with the same scale in and out; avg divisors for 1..n."""
    same = {"input_scale": scale(0), "input_zero_point": i64attr(0), "scale": scale(0), "zero_point": i64attr(0)}
    if kind == "max":
        return same
    params = [im.pow2_divisor(k) for k in range(1, n + 1)]
    return same | {"scheme": StringAttr("pow2"), "multipliers": ints([m for m, _ in params]),
                   "shifts": ints([s for _, s in params])}


def pow2_pool(kind: str, c: int, h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
              pads: tuple[int, int, int, int] = (0, 0, 0, 0), ceil_mode: bool = False,
              count_include_pad: bool = False) -> Operation:
    from dialects.nn import pool_output_shape

    out = pool_output_shape((1, c, h, w), kernel, stride, pads, (1, 1), ceil_mode)
    return qnn_op(qnn.PoolOp, [((1, c, h, w), np.int8)], (out, np.int8), kind=StringAttr(kind),
                  kernel=ints(list(kernel)), strides=ints(list(stride)), pads=ints(list(pads)), dilations=ints([1, 1]),
                  ceil_mode=i64attr(int(ceil_mode)), count_include_pad=i64attr(int(count_include_pad)),
                  **pool_props(kind, kernel[0] * kernel[1]))


def pow2_global_avg(c: int, h: int, w: int) -> Operation:
    m, s = im.pow2_divisor(h * w)
    props = pool_props("max", 0) | {"scheme": StringAttr("pow2"), "multipliers": ints([m]), "shifts": ints([s])}
    return qnn_op(qnn.GlobalPoolOp, [((1, c, h, w), np.int8)], ((1, c, 1, 1), np.int8), kind=StringAttr("avg"), **props)


def pow2_add(shape: tuple[int, ...], f_a: int, f_b: int, f_y: int, act: str = "none") -> Operation:
    common = max(f_a, f_b)
    return qnn_op(qnn.AddOp, [(shape, np.int8)] * 2, (shape, np.int8), input_scales=floats([2.0**-f_a, 2.0**-f_b]),
                  input_zero_points=ints([0, 0]), scheme=StringAttr("pow2"), operand_shifts=ints([f_a - common, f_b - common]),
                  shifts=ints([common - f_y]), scale=scale(f_y), zero_point=i64attr(0), **activation_props(act))


def pow2_concat(shapes: Sequence[tuple[int, ...]], fs: Sequence[int], f_y: int) -> Operation:
    out = (*shapes[0][:1], sum(s[1] for s in shapes), *shapes[0][2:])
    return qnn_op(qnn.ConcatOp, [(s, np.int8) for s in shapes], (out, np.int8), axis=i64attr(1),
                  input_scales=floats([2.0**-f for f in fs]), input_zero_points=ints([0] * len(fs)),
                  scheme=StringAttr("pow2"), shifts=ints([f - f_y for f in fs]), scale=scale(f_y), zero_point=i64attr(0))


def sigmoid_lut(shape: tuple[int, ...]) -> tuple[Operation, np.ndarray]:
    table = im.build_table(im.TABLE_FUNCTIONS["sigmoid"], 1 / 16, 0, im.INT8_RANGE, 1 / 128, 0, im.INT8_RANGE)
    op = qnn_op(qnn.LutOp, [(shape, np.int8), ((256,), np.int8)], (shape, np.int8), input_scale=f64attr(1 / 16),
                input_zero_point=i64attr(0), scale=f64attr(1 / 128), zero_point=i64attr(0),
                activation=StringAttr("sigmoid"))
    return op, table.astype(np.int8)


def reference(op: Operation, *arrays: np.ndarray) -> np.ndarray:
    return evaluate(op, list(arrays))[0]


def hwc(nchw: np.ndarray) -> np.ndarray:
    return nchw[0].transpose(1, 2, 0)


def nchw(array: np.ndarray) -> np.ndarray:
    return array.transpose(2, 0, 1)[None]


def random_input(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    return rng.integers(-128, 128, (1, c, h, w)).astype(np.int8)


# ---------------------------------------------------------------------------------------
# Cases: a program, its DDR inputs and the reference output
# ---------------------------------------------------------------------------------------


@dataclass
class Case:
    built: bld.BuiltProgram
    inputs: list[tuple[FeatureMap, np.ndarray]]  # (map, NCHW array)
    output: FeatureMap
    expected: np.ndarray  # (h, w, c)

    @property
    def program(self) -> list[Instruction]:
        return self.built.instructions

    def ddr(self) -> DdrImage:
        image = self.built.ddr()
        for fmap, array in self.inputs:
            image.write(fmap, array)
        return image

    def run(self, config: DpuConfig, program: Sequence[Instruction] | bytes | None = None, **options: Any) -> SimResult:
        """Simulate (the case's program or another) and check the output bit for bit."""
        result = simulate(self.program if program is None else program, self.ddr(), config, layers=self.built.layers,
                          **options)
        got = result.read(self.output)
        bad = np.argwhere(got != self.expected)
        assert not bad.size, (f"{len(bad)} of {got.size} outputs differ, first at (h, w, c) = {tuple(bad[0])}: "
                              f"{got[tuple(bad[0])]} != {self.expected[tuple(bad[0])]}")
        return result


def conv_case(rng: np.random.Generator, config: DpuConfig, c: int, h: int, w: int, oc: int, kernel: tuple[int, int],
              tile: bld.Tile = bld.WHOLE, **conv: Any) -> Case:
    op, weights, bias = pow2_conv(rng, c, h, w, oc, kernel, **conv)
    x = random_input(rng, c, h, w)
    expected = reference(op, x, weights, bias)
    b = bld.ProgramBuilder(config)
    xm = b.feature_map("input", h, w, c)
    ym = b.feature_map("output", *expected.shape[2:], oc)
    with b.layer("conv"):
        bld.conv(b, bld.ConvLayer.from_qnn(op, weights, bias), xm, ym, tile)
    return Case(b.finish(), [(xm, x)], ym, hwc(expected))


def pool_case(rng: np.random.Generator, config: DpuConfig, c: int, h: int, w: int, tile: bld.Tile = bld.WHOLE,
              **pool: Any) -> Case:
    op = pow2_global_avg(c, h, w) if pool.pop("global_", False) else pow2_pool(c=c, h=h, w=w, **pool)
    x = random_input(rng, c, h, w)
    expected = reference(op, x)
    b = bld.ProgramBuilder(config)
    xm = b.feature_map("input", h, w, c)
    ym = b.feature_map("output", *expected.shape[2:], c)
    with b.layer("pool"):
        bld.pool(b, bld.PoolLayer.from_qnn(op), xm, ym, tile)
    return Case(b.finish(), [(xm, x)], ym, hwc(expected))


def add_case(rng: np.random.Generator, config: DpuConfig, c: int, h: int, w: int, f_a: int, f_b: int, f_y: int,
             act: str = "none", tile: bld.Tile = bld.WHOLE) -> Case:
    op = pow2_add((1, c, h, w), f_a, f_b, f_y, act)
    a, other = random_input(rng, c, h, w), random_input(rng, c, h, w)
    b = bld.ProgramBuilder(config)
    am, om, ym = (b.feature_map(reg, h, w, c) for reg in ("input", "r4", "output"))
    with b.layer("add"):
        bld.eltwise(b, bld.EltwiseLayer.from_qnn_add(op), am, om, ym, tile)
    return Case(b.finish(), [(am, a), (om, other)], ym, hwc(reference(op, a, other)))


def concat_case(rng: np.random.Generator, config: DpuConfig, c: int, h: int, w: int, oc: tuple[int, int],
                tile: bld.Tile = bld.WHOLE) -> Case:
    """Two 3x3 convolutions of one input concatenated: the first at the concat's scale
    SAVEs straight into its channels, the second (finer scale) goes through the work
    region and an ELEW rescale into the rest (concat by placement)."""
    pads = (1, 1, 1, 1)
    first, w1, b1 = pow2_conv(rng, c, h, w, oc[0], (3, 3), pads=pads, act="relu", f_y=2)
    second, w2, b2 = pow2_conv(rng, c, h, w, oc[1], (3, 3), pads=pads, f_y=4)
    cat = pow2_concat([(1, oc[0], h, w), (1, oc[1], h, w)], [2, 4], 2)
    x = random_input(rng, c, h, w)
    expected = reference(cat, reference(first, x, w1, b1), reference(second, x, w2, b2))
    b = bld.ProgramBuilder(config)
    xm = b.feature_map("input", h, w, c)
    ym = b.feature_map("output", h, w, sum(oc))
    tmp = b.feature_map("work", h, w, oc[1])
    assert bld.EltwiseLayer.concat_operand(cat, 0) is None
    rescale = bld.EltwiseLayer.concat_operand(cat, 1)
    assert rescale is not None
    with b.layer("conv_a"):
        bld.conv(b, bld.ConvLayer.from_qnn(first, w1, b1), xm, ym.channels(0, oc[0]), tile)
    with b.layer("conv_b"):
        bld.conv(b, bld.ConvLayer.from_qnn(second, w2, b2), xm, tmp, tile)
    with b.layer("concat"):
        bld.eltwise(b, rescale, tmp, None, ym.channels(oc[0], oc[1]), tile)
    return Case(b.finish(), [(xm, x)], ym, hwc(expected))


def residual_case(rng: np.random.Generator, config: DpuConfig, c: int, h: int, w: int,
                  tile: bld.Tile = bld.WHOLE) -> Case:
    """y = relu(x + conv2(conv1(x))): three layers handing feature maps over through DDR."""
    pads = (1, 1, 1, 1)
    conv1, w1, b1 = pow2_conv(rng, c, h, w, c, (3, 3), pads=pads, act="relu")
    conv2, w2, b2 = pow2_conv(rng, c, h, w, c, (3, 3), pads=pads, f_y=1)
    add = pow2_add((1, c, h, w), 0, 1, 0, "relu")
    x = random_input(rng, c, h, w)
    expected = reference(add, x, reference(conv2, reference(conv1, x, w1, b1), w2, b2))
    b = bld.ProgramBuilder(config)
    xm = b.feature_map("input", h, w, c)
    t1, t2 = b.feature_map("work", h, w, c), b.feature_map("work", h, w, c)
    ym = b.feature_map("output", h, w, c)
    with b.layer("conv1"):
        bld.conv(b, bld.ConvLayer.from_qnn(conv1, w1, b1), xm, t1, tile)
    with b.layer("conv2"):
        bld.conv(b, bld.ConvLayer.from_qnn(conv2, w2, b2), t1, t2, tile)
    with b.layer("add"):
        bld.eltwise(b, bld.EltwiseLayer.from_qnn_add(add), xm, t2, ym, tile)
    return Case(b.finish(), [(xm, x)], ym, hwc(expected))


def lut_case(rng: np.random.Generator, config: DpuConfig, c: int, h: int, w: int, tile: bld.Tile = bld.WHOLE) -> Case:
    op, table = sigmoid_lut((1, c, h, w))
    x = random_input(rng, c, h, w)
    b = bld.ProgramBuilder(config)
    xm, ym = b.feature_map("input", h, w, c), b.feature_map("output", h, w, c)
    with b.layer("sigmoid"):
        bld.lut(b, table, xm, ym, tile)
    return Case(b.finish(), [(xm, x)], ym, hwc(reference(op, x, table)))


def upsample_case(rng: np.random.Generator, config: DpuConfig, c: int, h: int, w: int, factor: tuple[int, int],
                  tile: bld.Tile = bld.WHOLE) -> Case:
    x = random_input(rng, c, h, w)
    expected = np.repeat(np.repeat(hwc(x), factor[0], axis=0), factor[1], axis=1)  # nearest resize
    b = bld.ProgramBuilder(config)
    xm, ym = b.feature_map("input", h, w, c), b.feature_map("output", h * factor[0], w * factor[1], c)
    with b.layer("upsample"):
        bld.upsample(b, factor, xm, ym, tile)
    return Case(b.finish(), [(xm, x)], ym, expected)


# ---------------------------------------------------------------------------------------
# Schedules and broken programs
# ---------------------------------------------------------------------------------------


def random_order(program: Sequence[Instruction], rng: np.random.Generator) -> list[int]:
    """A random execution order that respects the queues and the tokens: repeatedly run
    the head of a random queue whose waited-for signallers have run."""
    signallers: dict[int, list[int]] = {}
    for t in tokens(program):
        signallers.setdefault(t.waiter, []).append(t.signaller)
    queues = [[i for i, ins in enumerate(program) if ins.queue == q] for q in QUEUES]
    heads, done, order = [0, 0, 0], set(), []
    while any(h < len(q) for h, q in zip(heads, queues, strict=True)):
        ready = [k for k in range(len(QUEUES)) if heads[k] < len(queues[k])
                 and all(s in done for s in signallers.get(queues[k][heads[k]], ()))]
        k = int(rng.choice(ready))
        i = queues[k][heads[k]]
        heads[k] += 1
        done.add(i)
        order.append(i)
    return order


def without_token(program: Sequence[Instruction], token: Token) -> list[Instruction]:
    """The program with one signal/wait pair removed (the other pairs stay matched)."""
    out = list(program)
    s, w = out[token.signaller], out[token.waiter]
    out[token.signaller] = s.replace(signal=s.signal - {token.dest})
    out[token.waiter] = w.replace(wait=w.wait - {token.source})
    return out
