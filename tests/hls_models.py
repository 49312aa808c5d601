"""Small models for the HLS tests (tests/test_lower_to_hls.py, test_hls_project.py): nn
programs built op by op with seeded random weights (float and half accelerators take them as
they are), int8-quantized with calibration data by the `quantize` pass (compiler.quantize)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler import quantize
from compiler.program import Program, WeightStore, attach_weights
from compiler.registry import parse_module
from dialects import nn


def arr(values: tuple[int, ...] | list[int]) -> str:
    return f"array<i64: {', '.join(map(str, values))}>"


def ttype(shape: tuple[int, ...]) -> str:
    return f"tensor<{'x'.join(map(str, shape))}xf32>"


class Net:
    """An nn program under construction: each method adds an op and returns its value name."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        self.input_shape = shape
        self.rng = np.random.default_rng(seed)
        self.lines: list[str] = []
        self.weights: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {"%x": shape}
        self.count = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"%{hint}{self.count}"

    def op(self, hint: str, text: str, operands: list[str], shape: tuple[int, ...]) -> str:
        name = self.fresh(hint)
        types = ", ".join(ttype(self.shapes[o]) for o in operands)
        self.lines.append(f"{name} = {text} : ({types}) -> {ttype(shape)}")
        self.shapes[name] = shape
        return name

    def weight(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        handle = f"{name[1:]}.w"
        self.weights[handle] = array.astype(np.float32)
        self.lines.append(f'{name} = nn.weight "{handle}" : {ttype(array.shape)}')
        self.shapes[name] = array.shape
        return name

    def conv(self, x: str, m: int, k: int = 3, stride: int = 1, pads: tuple[int, int, int, int] | int = 0,
             group: int = 1, dilation: int = 1, act: str | None = "relu", alpha: float = 0.1) -> str:
        c = self.shapes[x][1]
        pads = (pads,) * 4 if isinstance(pads, int) else pads
        fan_in = c // group * k * k
        w = self.weight("w", self.rng.normal(0, 1.5 / np.sqrt(fan_in), (m, c // group, k, k)))
        b = self.weight("b", self.rng.normal(0, 0.1, m))
        shape = nn.conv2d_output_shape(self.shapes[x], self.shapes[w], (stride, stride), pads, (dilation, dilation), group)
        name = f"conv{self.count}"
        y = self.op("c", f'nn.conv2d {x}, {w}, {b} {{name = "{name}", strides = {arr((stride, stride))}, '
                         f'pads = {arr(pads)}, dilations = {arr((dilation, dilation))}, group = {group} : i64}}',
                    [x, w, b], shape)
        return self.activation(y, act, alpha)

    def activation(self, x: str, act: str | None, alpha: float = 0.1) -> str:
        if act is None:
            return x
        extra = f", alpha = {alpha} : f64" if act == "leaky_relu" else ""
        return self.op("r", f'nn.{act} {x} {{name = "{act}{self.count}"{extra}}}', [x], self.shapes[x])

    def pool(self, x: str, kind: str, k: int, stride: int, pads: tuple[int, int, int, int] | int = 0,
             ceil: int = 0, include_pad: int = 0) -> str:
        pads = (pads,) * 4 if isinstance(pads, int) else pads
        shape = nn.pool_output_shape(self.shapes[x], (k, k), (stride, stride), pads, (1, 1), bool(ceil))
        return self.op("p", f'nn.pool {x} {{name = "pool{self.count}", kind = "{kind}", kernel = {arr((k, k))}, '
                            f'strides = {arr((stride, stride))}, pads = {arr(pads)}, dilations = {arr((1, 1))}, '
                            f'ceil_mode = {ceil} : i64, count_include_pad = {include_pad} : i64}}', [x], shape)

    def global_pool(self, x: str, kind: str = "avg") -> str:
        n, c = self.shapes[x][:2]
        return self.op("g", f'nn.global_pool {x} {{name = "gap{self.count}", kind = "{kind}"}}', [x], (n, c, 1, 1))

    def add(self, a: str, b: str, act: str | None = "relu") -> str:
        y = self.op("a", f'nn.add {a}, {b} {{name = "add{self.count}"}}', [a, b], self.shapes[a])
        return self.activation(y, act)

    def flatten(self, x: str) -> str:
        n, *rest = self.shapes[x]
        return self.op("f", f'nn.reshape {x} {{name = "flatten{self.count}"}}', [x], (n, int(np.prod(rest))))

    def dense(self, x: str, n: int, act: str | None = None) -> str:
        k = self.shapes[x][1]
        w = self.weight("w", self.rng.normal(0, 1.5 / np.sqrt(k), (n, k)))
        b = self.weight("b", self.rng.normal(0, 0.1, n))
        y = self.op("d", f'nn.gemm {x}, {w}, {b} {{name = "fc{self.count}", alpha = 1.0 : f64, beta = 1.0 : f64, '
                         f'trans_a = 0 : i64, trans_b = 1 : i64}}', [x, w, b], (1, n))
        return self.activation(y, act)

    def matmul(self, x: str, n: int) -> str:
        """A dense layer as nn.matmul with a K x N weight (no bias)."""
        k = self.shapes[x][1]
        w = self.weight("w", self.rng.normal(0, 1.5 / np.sqrt(k), (k, n)))
        return self.op("m", f'nn.matmul {x}, {w} {{name = "fc{self.count}"}}', [x, w], (1, n))

    def program(self, out: str) -> Program:
        body = "\n  ".join(self.lines)
        text = (f'func.func @main(%x: {ttype(self.input_shape)} {{nn.name = "x"}}) -> ({ttype(self.shapes[out])} '
                f'{{nn.name = "y"}}) {{\n  {body}\n  func.return {out} : {ttype(self.shapes[out])}\n}}')
        module = parse_module(text, "hls_models")
        store = WeightStore(self.weights)
        attach_weights(module, store)
        return Program(module, store, "hls_models")


def cnn(net: Net) -> str:
    """conv 3x3 (relu) -> max pool 2x2 -> flatten -> dense: the digits CNN's shape."""
    x = net.conv("%x", 8, 3, pads=1)
    x = net.pool(x, "max", 2, 2)
    return net.dense(net.flatten(x), 10)


def mobile(net: Net) -> str:
    """MobileNet-style: strided conv, depthwise 3x3 (leaky relu), pointwise, average pool with
    ceil mode and count_include_pad, grouped conv, global average pool, dense."""
    x = net.conv("%x", 8, 3, stride=2, pads=(1, 1, 0, 0))
    x = net.conv(x, 8, 3, pads=1, group=8, act="leaky_relu")
    x = net.conv(x, 16, 1)
    x = net.pool(x, "avg", 3, 2, pads=1, ceil=1, include_pad=1)
    x = net.conv(x, 8, 3, pads=1, group=2, dilation=1)
    x = net.global_pool(x, "avg")
    return net.dense(net.flatten(x), 6)


def residual(net: Net) -> str:
    """A residual block: conv -> (conv -> conv) + skip -> relu -> max pool (ceil) ->
    dilated conv -> global max pool -> dense."""
    x = net.conv("%x", 8, 3, pads=1)
    y = net.conv(x, 8, 3, pads=1)
    y = net.conv(y, 8, 3, pads=1, act=None)
    x = net.add(x, y)
    x = net.pool(x, "max", 3, 2, pads=0, ceil=1)
    x = net.conv(x, 8, 3, pads=2, dilation=2)
    x = net.global_pool(x, "max")
    return net.dense(net.flatten(x), 5)


def tables(net: Net) -> str:
    """Lookup-table activations (sigmoid, hard-swish), a channel concat of two branches at
    different scales, average pooling, dense."""
    a = net.conv("%x", 4, 3, pads=1)
    s = net.op("s", f'nn.sigmoid {a} {{name = "sigmoid"}}', [a], net.shapes[a])
    b = net.conv("%x", 3, 1, act=None)
    n, _, h, w = net.shapes[s]
    c = net.op("k", f'nn.concat {s}, {b} {{name = "concat", axis = 1 : i64}}', [s, b], (n, 7, h, w))
    x = net.op("h", f'nn.hardswish {c} {{name = "hardswish"}}', [c], net.shapes[c])
    x = net.pool(x, "avg", 2, 2)
    return net.dense(net.flatten(x), 4)


def floats(net: Net) -> str:
    """What float accelerators add: clip and leaky relu fused into convolutions, a concat, a
    relu on its own (behind a max pool), a leaky relu behind an add, nn.matmul (a K x N weight)."""
    a = net.conv("%x", 4, 3, pads=1, act=None)
    a = net.op("c", f'nn.clip {a} {{name = "clip{net.count}", min = 0.0 : f64, max = 6.0 : f64}}', [a], net.shapes[a])
    b = net.conv("%x", 4, 1, act="leaky_relu", alpha=0.2)
    n, _, h, w = net.shapes[a]
    c = net.op("k", f'nn.concat {a}, {b} {{name = "concat", axis = 1 : i64}}', [a, b], (n, 8, h, w))
    d = net.conv(c, 8, 3, pads=1, act=None)
    x = net.add(c, d, act="leaky_relu")
    x = net.pool(x, "max", 2, 2)
    x = net.activation(x, "relu")
    return net.matmul(net.flatten(x), 5)


MODELS: dict[str, tuple[Callable[[Net], str], tuple[int, ...]]] = {
    "cnn": (cnn, (1, 1, 8, 8)),
    "mobile": (mobile, (1, 3, 12, 12)),
    "residual": (residual, (1, 3, 8, 8)),
    "tables": (tables, (1, 2, 6, 6)),
    "floats": (floats, (1, 3, 6, 6)),  # float and half accelerators only
}


def float_program(model: str, seed: int = 0) -> Program:
    """The model as a float nn program (what float and half accelerators are built from)."""
    build, shape = MODELS[model]
    net = Net(shape, seed)
    return net.program(build(net))


def quantized(model: str, scheme: str = "fixed", seed: int = 0, per_channel: bool = True) -> Program:
    """The model, int8-quantized on a seeded calibration batch."""
    shape = MODELS[model][1]
    program = float_program(model, seed)
    calibration = np.random.default_rng(seed + 1).normal(size=(8, *shape[1:])).astype(np.float32)
    return quantize(program, [{"x": calibration}], scheme=scheme, per_channel=per_channel)


def sample_inputs(model: str, batch: int = 2, seed: int = 7) -> np.ndarray:
    shape = MODELS[model][1]
    return np.random.default_rng(seed).normal(size=(batch, *shape[1:])).astype(np.float32)
