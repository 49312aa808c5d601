"""How far a float or half accelerator's outputs may be from the reference executor's.

    worst = error_bound(program, x, "half")                        # guaranteed
    likely = error_bound(program, x, "half", probabilistic=True)   # what the testbenches check

A forward error analysis of the float `nn` program (the one `lower-to-hls{dtype=...}`
takes), run in float64 NumPy on the actual inputs. Each value carries its exact value (exact
arithmetic on the float32 model), a worst-case bound on its error, and the variance of its
error when rounding errors are modelled as independent and uniform in [-u, u] (relative;
its magnitudes |x| + CONFIDENCE sqrt(v), not the worst case).
u is the unit roundoff of the type (2^-24 for float, 2^-11 for half), gamma(n) = n u / (1 - n u):

- the input: error u |x| in half (the port's conversion), none in float;
- conv / dense with K products per output: the templates accumulate in the layer's type from
  the bias, one rounding per product and per sum, plus one for a half weight (converted with
  NumPy's float16) and one for a leaky slope (docs/hls.md):
  worst e_y = |W| e_x + gamma(K + 3) m, with m = |W| (|x| + e_x) + |b|;
  variance v_y = W^2 v_x + u^2 / 3 (2 p + (K + 1) (max(b^2, y^2) + p)), p = W^2 (|x| + e_x)^2:
  the products and weights' roundings, and the K + 1 partial sums', each modelled as drifting
  from the bias b to the result y plus a random walk of the products (a model, not a bound);
- average pooling over n taps: e_y = mean(e_x) + gamma(n + 1) mean(|x| + e_x);
- add: e_y = e_a + e_b + u (|a| + |b| + e_a + e_b);
- max pooling, relu, clip, concat, reshapes: the error passes through (1-Lipschitz, exact);
  a leaky relu: |alpha| times it, plus its own rounding.

The reference executor computes in float32 (BLAS, Winograd for large 3x3 layers), so it has
its own error, bounded the same way with u = 2^-24 and doubled for its reordered sums. The
bound is the sum of the two: worst-case, `e_acc + 2 e_ref` (a guarantee, but loose: it assumes
every rounding error has the worst sign, and grows with |W| layer after layer); probabilistic,
`CONFIDENCE * sqrt(v_acc + 4 v_ref)` (Higham and Mary's observation that errors of independent
roundings grow like sqrt(K) u, not K u), capped by the worst case. gamma(n) is infinite once
n u >= 1 (K >= 2048 in half): such a layer has no finite worst-case bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation, SSAValue

from backends.reference.kernels import KERNELS, as_nchw, conv2d
from compiler.errors import UnsupportedError
from compiler.program import Program
from dialects import nn

UNIT_ROUNDOFF = {"float": 2.0**-24, "half": 2.0**-11}
REFERENCE_FACTOR = 2.0  # the reference's float32 sums are reordered (BLAS blocking, Winograd transforms)
CONFIDENCE = 6.0  # standard deviations of the probabilistic bound
SAFETY = 1 + 2.0**-20  # float64 evaluation of the bound itself, and its rounding to float32


def gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u) if n * u < 1 else np.inf


@dataclass
class Tracked:
    """A value of the program: exact, a worst-case bound on its error, the error's variance."""

    value: np.ndarray
    worst: np.ndarray
    variance: np.ndarray

    @property
    def magnitude(self) -> np.ndarray:
        """A bound on the computed value's magnitude."""
        return np.abs(self.value) + self.worst

    @property
    def likely_magnitude(self) -> np.ndarray:
        """The computed value's magnitude as the probabilistic model sees it."""
        return np.abs(self.value) + CONFIDENCE * np.sqrt(self.variance)


def error_bound(program: Program, x: np.ndarray, dtype: str, *, probabilistic: bool = False) -> np.ndarray:
    """Per output value, a bound on |accelerator - reference executor| for the batch `x` (the
    program's one input), in the shape of the program's one output for that batch."""
    accelerator = propagate(program, x, UNIT_ROUNDOFF[dtype], input_rounded=dtype == "half")
    reference = propagate(program, x, UNIT_ROUNDOFF["float"], input_rounded=False)
    worst = accelerator.worst + REFERENCE_FACTOR * reference.worst
    if probabilistic:
        spread = CONFIDENCE * np.sqrt(accelerator.variance + REFERENCE_FACTOR**2 * reference.variance)
        worst = np.minimum(worst, spread)
    return worst * SAFETY


def propagate(program: Program, x: np.ndarray, u: float, *, input_rounded: bool) -> Tracked:
    """The program's output for `x`, with its error bound and variance at unit roundoff u."""
    (func,) = [op for op in program.module.ops if isinstance(op, FuncOp)]
    block = func.body.block
    x64 = np.asarray(x, np.float64)
    rounding = u * np.abs(x64) if input_rounded else np.zeros_like(x64)
    env: dict[SSAValue, Tracked] = {block.args[0]: Tracked(x64, rounding, rounding**2 / 3)}
    weights: dict[SSAValue, np.ndarray] = {}
    for op in block.ops:
        if isinstance(op, ReturnOp):
            return env[op.operands[0]]
        if isinstance(op, nn.WeightOp):
            weights[op.results[0]] = np.asarray(program.weights[op.handle.data], np.float64)
            continue
        rule = RULES.get(type(op))
        if rule is None:
            raise UnsupportedError(f"{op.name} has no error bound (nor a float HLS kernel)", op_where(op))
        inputs = [env[v] for v in op.operands if v in env]
        env[op.results[0]] = rule(op, inputs, [weights[v] for v in op.operands if v in weights], u)
    raise UnsupportedError("@main has no func.return", "error bound")


def op_where(op: Operation) -> str:
    return f"{op.name} '{op.layer_name}'" if isinstance(op, nn.NNOp) and op.layer_name else op.name


def activate(op: Operation, t: Tracked, u: float) -> Tracked:
    """A relu / clip / leaky relu (an op, or fused into a conv / gemm) on a tracked value."""
    lo = hi = alpha = None
    if isinstance(op, nn.Conv2dOp | nn.GemmOp):
        kind = op.activation.data if op.activation is not None else ""
        lo, hi, alpha = op.act_min, op.act_max, op.act_alpha
    elif isinstance(op, nn.ClipOp):
        kind, lo, hi = "clip", op.min, op.max
    elif isinstance(op, nn.LeakyReluOp):
        kind, alpha = "leaky_relu", op.alpha
    else:
        kind = "relu" if isinstance(op, nn.ReluOp) else ""
    if kind == "relu":
        return Tracked(np.maximum(t.value, 0.0), t.worst, t.variance)
    if kind == "clip":
        bounds = (-np.inf if lo is None else lo.value.data, np.inf if hi is None else hi.value.data)
        return Tracked(np.clip(t.value, *bounds), t.worst, t.variance)
    if kind == "leaky_relu":
        assert alpha is not None
        slope = float(alpha.value.data)
        scale = max(abs(slope), 1.0)
        rounding = u * abs(slope)
        return Tracked(np.where(t.value < 0, slope * t.value, t.value), scale * t.worst + rounding * t.magnitude,
                       scale**2 * t.variance + (rounding * t.likely_magnitude) ** 2 / 3)
    return t


Linear = Callable[[np.ndarray, np.ndarray], np.ndarray]


def contraction(op: Operation, x: Tracked, w: np.ndarray, bias: np.ndarray | None, linear: Linear, k: int,
                u: float) -> Tracked:
    b = np.zeros(1) if bias is None else bias
    value = linear(x.value, w) + b
    magnitude = linear(x.magnitude, np.abs(w)) + np.abs(b)
    worst = linear(x.worst, np.abs(w)) + gamma(k + 3, u) * magnitude
    # The partial sums run from the bias to the result, plus a random walk of the products:
    # each of the k + 1 roundings sees at most max(b^2, y^2) + sum of products^2 on average.
    products = linear(x.likely_magnitude**2, w**2)
    partial_sums = np.maximum(b**2, value**2) + products
    variance = linear(x.variance, w**2) + u**2 / 3 * (2 * products + (k + 1) * partial_sums)
    return activate(op, Tracked(value, worst, variance), u)


def conv_rule(op: Operation, inputs: list[Tracked], weights: list[np.ndarray], u: float) -> Tracked:
    assert isinstance(op, nn.Conv2dOp)
    m, cg, kh, kw = weights[0].shape
    out_hw = nn.shape_of(op.result)[2:]

    def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return as_nchw(conv2d(x, w, nn.int_list(op.strides), nn.int_list(op.pads), nn.int_list(op.dilations),
                              int(op.group.value.data), out_hw))

    bias = weights[1].reshape(1, m, 1, 1) if len(weights) > 1 else None
    return contraction(op, inputs[0], weights[0], bias, linear, cg * kh * kw, u)


def gemm_rule(op: Operation, inputs: list[Tracked], weights: list[np.ndarray], u: float) -> Tracked:
    assert isinstance(op, nn.GemmOp | nn.MatMulOp)
    if len(inputs) != 1:
        raise UnsupportedError("a dense layer's second operand must be a weight", op_where(op))
    trans_b = isinstance(op, nn.GemmOp) and bool(op.trans_b.value.data)
    w, bias = weights[0], None
    if isinstance(op, nn.GemmOp):  # the emitter folds alpha and beta into the weights and bias
        w = w * float(op.alpha.value.data)
        bias = weights[1] * float(op.beta.value.data) if len(weights) > 1 else None

    def linear(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return x @ (weights.T if trans_b else weights)

    return contraction(op, inputs[0], w, bias, linear, w.shape[1 if trans_b else 0], u)


def pool_rule(op: Operation, inputs: list[Tracked], weights: list[np.ndarray], u: float) -> Tracked:
    assert isinstance(op, nn.PoolOp | nn.GlobalPoolOp)
    (x,) = inputs

    def pool(a: np.ndarray) -> np.ndarray:
        return np.asarray(KERNELS[type(op)](op, [a])[0], np.float64)

    if op.kind.data == "max":
        return Tracked(pool(x.value), pool(x.worst), pool(x.variance))
    global_pool = isinstance(op, nn.GlobalPoolOp)
    kernel = x.value.shape[2:] if isinstance(op, nn.GlobalPoolOp) else nn.int_list(op.kernel)
    taps = int(np.prod(np.asarray(kernel)))
    # The mean of n independent errors has 1/n of their variance; a window's count can be
    # below its kernel size (pads not counted), so windows get no such credit.
    return Tracked(pool(x.value), pool(x.worst) + gamma(taps + 1, u) * pool(x.magnitude),
                   pool(x.variance) / (taps if global_pool else 1) + u**2 / 3 * (taps + 1) * pool(x.likely_magnitude)**2)


def add_rule(op: Operation, inputs: list[Tracked], weights: list[np.ndarray], u: float) -> Tracked:
    a, b = inputs
    # The operands' errors may be correlated (a residual skip and the branch it skips): their
    # standard deviations add.
    spread = (np.sqrt(a.variance) + np.sqrt(b.variance)) ** 2
    return Tracked(a.value + b.value, a.worst + b.worst + u * (a.magnitude + b.magnitude),
                   spread + (u * (a.likely_magnitude + b.likely_magnitude)) ** 2 / 3)


def unary_rule(op: Operation, inputs: list[Tracked], weights: list[np.ndarray], u: float) -> Tracked:
    return activate(op, inputs[0], u)


def view_rule(op: Operation, inputs: list[Tracked], weights: list[np.ndarray], u: float) -> Tracked:
    (x,) = inputs
    shape = (x.value.shape[0], *nn.shape_of(op.results[0])[1:])
    return Tracked(x.value.reshape(shape), x.worst.reshape(shape), x.variance.reshape(shape))


def concat_rule(op: Operation, inputs: list[Tracked], weights: list[np.ndarray], u: float) -> Tracked:
    assert isinstance(op, nn.ConcatOp)
    if weights:
        raise UnsupportedError("a concat of a constant has no HLS kernel", op_where(op))
    axis = int(op.axis.value.data)
    return Tracked(*(np.concatenate([getattr(t, f) for t in inputs], axis) for f in ("value", "worst", "variance")))


Rule = Callable[[Operation, list[Tracked], list[np.ndarray], float], Tracked]
RULES: dict[type[Operation], Rule] = {
    nn.Conv2dOp: conv_rule, nn.GemmOp: gemm_rule, nn.MatMulOp: gemm_rule,
    nn.PoolOp: pool_rule, nn.GlobalPoolOp: pool_rule, nn.AddOp: add_rule, nn.ConcatOp: concat_rule,
    nn.ReluOp: unary_rule, nn.ClipOp: unary_rule, nn.LeakyReluOp: unary_rule,
    nn.ReshapeOp: view_rule, nn.IdentityOp: view_rule,
}
