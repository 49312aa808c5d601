"""Calibration: the float range of every tensor the quantize pass needs, from input batches.

The float program runs on each calibration batch through the reference executor; what it
runs is a copy of the module whose function returns the tensors to observe (no second
executor). Three calibrators turn what was seen into a range [lo, hi]:

- `minmax`: the smallest and largest value seen.
- `percentile`: the values at the p-th and (100 - p)-th percentiles (|x|'s p-th for a
  symmetric range), so that a few outliers do not stretch the scale.
- `entropy`: TensorRT's KL-divergence threshold: the clipping threshold T of |x| whose
  quantized distribution (`levels` steps over [0, T]) loses the least information
  against the observed one.
- `mse`: the range whose int8 quantization has the smallest mean squared error over the
  observed values (clipping against rounding), as Vitis AI's "min-diffs" chooses a
  power-of-two fix position and NVIDIA's pytorch-quantization its `mse` amax.

Percentile, entropy and mse build a histogram per tensor over [-m, m] (m = max |x| from a
first min-max pass), so they run the calibration data twice. The same runs also give the
mean input window of each convolution (`PatchMean`), which bias correction needs.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from xdsl.dialects.builtin import FunctionType, ModuleOp, TensorType
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import SSAValue

from compiler.errors import LayerloomError
from compiler.program import Program, WeightStore, check_input_names, io_names
from compiler.quant import intmath as im
from compiler.tensors import dtype_of

CALIBRATORS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_PERCENTILE = 99.999  # what onnxruntime's percentile calibrator keeps
# Candidate ranges of the mse calibrator: each end of the min-max range scaled by 0.20, 0.25,
# ..., 1.00 (`fixed`), or the power-of-two scale that covers it and the next finer ones (`pow2`).
MSE_FRACTIONS = np.arange(4, 21) / 20.0
MSE_POW2_STEPS = 4
HISTOGRAM_BINS = 2048  # per sign: the histogram of x has 2 * HISTOGRAM_BINS bins over [-m, m]
EMPTY = 1e-12  # KL: probability given to a bin Q leaves empty where P is not (a steep but finite cost)

Batch = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------
# Calibration data
# ---------------------------------------------------------------------------------------


def load_calibration(path: str | Path) -> list[Batch]:
    """The arrays of an `.npz` file keyed by input name: one batch (split by `batches`
    when it holds more samples than the program's batch size)."""
    p = Path(path)
    if not p.is_file():
        raise LayerloomError("calibration file not found" if not p.exists() else "not a file", str(p))
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            raise LayerloomError("calibration data must be an .npz keyed by input name, not an .npy", str(p))
        with data:
            return [{k: data[k] for k in data.files}]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise LayerloomError(f"cannot read calibration data: {e}", str(p)) from None


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def input_specs(main: FuncOp) -> list[InputSpec]:
    names = io_names(main.arg_attrs, "input", len(main.function_type.inputs))
    specs = []
    for name, t in zip(names, main.function_type.inputs, strict=True):
        assert isinstance(t, TensorType)
        specs.append(InputSpec(name, tuple(t.get_shape()), dtype_of(t)))
    return specs


def split_batch(spec: InputSpec, array: np.ndarray, where: str) -> list[np.ndarray]:
    """One calibration array as a list of arrays of the input's shape: the array itself,
    a stack of them (one more leading axis), or samples along the batch axis in multiples
    of the program's batch size."""
    a = np.asarray(array)
    if a.dtype != spec.dtype and a.dtype.kind == spec.dtype.kind == "f":
        a = a.astype(spec.dtype)
    if a.dtype != spec.dtype:
        raise LayerloomError(f"calibration input '{spec.name}' is {a.dtype}, the program expects {spec.dtype}", where)
    shape = spec.shape
    if a.shape == shape:
        return [a]
    if a.shape[1:] == shape:
        return list(a)
    if shape and a.ndim == len(shape) and a.shape[1:] == shape[1:] and shape[0] > 0 and a.shape[0] % shape[0] == 0:
        return list(a.reshape((a.shape[0] // shape[0], *shape)))
    described = "x".join(map(str, shape))
    raise LayerloomError(
        f"calibration input '{spec.name}' has shape {'x'.join(map(str, a.shape))}; expected {described}, "
        f"a stack of {described}, or a multiple of {shape[0] if shape else 1} samples along axis 0",
        where,
    )


def batches(specs: Sequence[InputSpec], data: Iterable[Mapping[str, ArrayLike]], where: str = "calibration") -> list[Batch]:
    """The calibration data as batches that fit the program's inputs exactly."""
    names = [s.name for s in specs]
    out: list[Batch] = []
    for item in data:
        check_input_names(names, item, "calibration data: ", where)
        parts = {s.name: split_batch(s, np.asarray(item[s.name]), where) for s in specs}
        counts = {len(p) for p in parts.values()}
        if len(counts) != 1:
            raise LayerloomError(f"calibration inputs hold different numbers of batches: "
                                 f"{ {k: len(v) for k, v in parts.items()} }", where)
        out.extend({k: v[i] for k, v in parts.items()} for i in range(counts.pop()))
    if not out:
        raise LayerloomError("calibration data is empty", where)
    return out


# ---------------------------------------------------------------------------------------
# Statistics of one tensor
# ---------------------------------------------------------------------------------------


@dataclass
class TensorStats:
    """What calibration saw of one tensor: its extremes, then (second pass) a histogram
    of its values over [-m, m], m = max(|lo|, |hi|)."""

    lo: float = np.inf
    hi: float = -np.inf
    histogram: np.ndarray | None = field(default=None, repr=False)

    @property
    def magnitude(self) -> float:
        return max(abs(self.lo), abs(self.hi)) if np.isfinite(self.lo) else 0.0

    def observe_range(self, x: np.ndarray) -> None:
        if x.size:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def observe_histogram(self, x: np.ndarray) -> None:
        m = self.magnitude
        if m <= 0 or x.size == 0:
            return
        h, _ = np.histogram(x, bins=2 * HISTOGRAM_BINS, range=(-m, m))
        self.histogram = h if self.histogram is None else self.histogram + h

    def range(self, calibrator: str, percentile: float, scheme: str) -> tuple[float, float]:
        if not np.isfinite(self.lo):
            return 0.0, 0.0
        if calibrator == "minmax" or self.histogram is None or self.magnitude == 0:
            return self.lo, self.hi
        m = self.magnitude
        if calibrator == "percentile":
            lo, hi = percentile_range(self.histogram, m, percentile)
        elif calibrator == "mse":
            lo, hi = mse_range(self.histogram, m, self.lo, self.hi, scheme)
        else:
            levels = 256 if scheme == "fixed" and self.lo >= 0 else 128
            threshold = entropy_threshold(folded(self.histogram), m, levels)
            lo, hi = -threshold, threshold
        return max(self.lo, lo), min(self.hi, hi)


@dataclass
class PatchMean:
    """The mean input window of a convolution (over images and output positions, zero
    padding included: (C, kh, kw)) or the mean input row of a gemm (`window` None: the
    mean over every axis but the last). Bias correction multiplies it by the weights'
    quantization error."""

    window: tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int], tuple[int, int]] | None = None
    total: np.ndarray | None = field(default=None, repr=False)
    count: int = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if self.window is None:
            sums, count = x.reshape(-1, x.shape[-1]).sum(axis=0), x.size // max(x.shape[-1], 1)
        else:
            sums, count = self.window_sums(x)
        self.total = sums if self.total is None else self.total + sums
        self.count += count

    def window_sums(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Sum over (n, oh, ow) of each tap (c, i, j) of the zero-padded windows."""
        assert self.window is not None
        (kh, kw), (sh, sw), (top, left, bottom, right), (dh, dw) = self.window
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
        ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
        sums = np.empty((x.shape[1], kh, kw))
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
                sums[:, i, j] = tap.sum(axis=(0, 2, 3))
        return sums, x.shape[0] * oh * ow

    @property
    def mean(self) -> np.ndarray | None:
        return None if self.total is None or self.count == 0 else self.total / self.count


def folded(histogram: np.ndarray) -> np.ndarray:
    """The histogram of |x| (HISTOGRAM_BINS bins over [0, m]) from that of x over [-m, m]."""
    half = histogram.size // 2
    return histogram[half:] + histogram[:half][::-1]


def percentile_range(histogram: np.ndarray, m: float, percentile: float) -> tuple[float, float]:
    """[lo, hi] holding all but (100 - p)% of the values at each end (bin edges)."""
    cdf = np.cumsum(histogram) / max(histogram.sum(), 1)
    edges = np.linspace(-m, m, histogram.size + 1)
    tail = 1.0 - percentile / 100.0
    lo = edges[int(np.searchsorted(cdf, tail, side="right"))]
    hi = edges[min(int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1, histogram.size)]
    return float(lo), float(hi)


def quantization_mse(histogram: np.ndarray, m: float, scale: ArrayLike, zero_point: ArrayLike) -> np.ndarray:
    """Mean squared error of int8 quantization with each (scale, zero point) pair over the
    histogram's values, each bin standing for its centre."""
    width = 2 * m / histogram.size
    seen = np.flatnonzero(histogram)
    centres, counts = -m + width * (seen + 0.5), histogram[seen].astype(np.float64)
    s = np.asarray(scale, np.float64).reshape(-1, 1)
    z = np.asarray(zero_point, np.float64).reshape(-1, 1)
    q = np.clip(np.rint(centres / s) + z, -128, 127)
    error = centres - s * (q - z)
    return (error * error) @ counts / max(counts.sum(), 1)


def mse_range(histogram: np.ndarray, m: float, lo: float, hi: float, scheme: str) -> tuple[float, float]:
    """The candidate range whose quantization (docs/quantization.md section 1) has the
    smallest error over the histogram: `fixed`, [lo * a, hi * b] for every pair of
    MSE_FRACTIONS a, b (each end clipped on its own); `pow2`, the range 127 * 2^-f of each
    power-of-two scale from the one covering max(|lo|, |hi|) to MSE_POW2_STEPS - 1 steps
    finer. Ties go to the wider range."""
    if scheme == "pow2":
        f0 = im.pow2_fraction_bits(m)
        scales = 2.0 ** -np.arange(f0, f0 + MSE_POW2_STEPS, dtype=np.float64)
        r = 127.0 * float(scales[int(np.argmin(quantization_mse(histogram, m, scales, 0)))])
        return -r, r
    fractions = MSE_FRACTIONS[::-1]
    candidates = [(lo * a, hi * b) for a in fractions for b in fractions]
    params = [im.asymmetric_params(a, b) for a, b in candidates]
    errors = quantization_mse(histogram, m, [p[0] for p in params], [p[1] for p in params])
    return candidates[int(np.argmin(errors))]


def entropy_threshold(abs_histogram: np.ndarray, m: float, levels: int) -> float:
    """TensorRT's calibration: for each candidate threshold (bin i from `levels` on), the
    reference distribution P is the histogram up to i with the clipped tail added to its
    last bin, Q is that histogram merged into `levels` steps and spread back over the
    non-empty bins; the threshold is the i with the smallest KL(P || Q)."""
    bins = abs_histogram.size
    hist = abs_histogram.astype(np.float64)
    # The zeros of a relu output would dominate P; count them like their neighbours (as
    # NVIDIA's pytorch-quantization does).
    hist[0] = hist[1]
    if bins <= levels:
        return m
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = sum of hist[i:]
    best, best_i = np.inf, bins
    for i in range(levels, bins + 1):
        p = hist[:i].copy()
        if i < bins:
            p[-1] += tail[i]
        full = hist[:i] != 0
        group = (np.arange(i) * levels) // i
        sums = np.bincount(group, weights=hist[:i], minlength=levels)
        counts = np.bincount(group, weights=full, minlength=levels)
        q = np.where(full, sums[group] / np.maximum(counts[group], 1), 0.0)
        if p.sum() == 0 or q.sum() == 0:
            continue
        ps, qs = p / p.sum(), q / q.sum()
        seen = ps > 0
        divergence = float(np.sum(ps[seen] * np.log(ps[seen] / np.maximum(qs[seen], EMPTY))))
        if divergence < best:
            best, best_i = divergence, i
    return m * best_i / bins


# ---------------------------------------------------------------------------------------
# Running the float program
# ---------------------------------------------------------------------------------------


def probe_program(module: ModuleOp, store: WeightStore, values: Sequence[SSAValue]) -> Program:
    """A copy of `module` whose @main returns `values` (in order) instead of its outputs."""
    from backends.reference.executor import main_function

    clone = module.clone()
    old_main, new_main = main_function(module), main_function(clone)
    mapping: dict[SSAValue, SSAValue] = dict(zip(old_main.body.block.args, new_main.body.block.args, strict=True))
    for old, new in zip(old_main.body.block.ops, new_main.body.block.ops, strict=True):
        mapping.update(zip(old.results, new.results, strict=True))
    block = new_main.body.block
    old_return = block.last_op
    assert isinstance(old_return, ReturnOp)
    probes = [mapping[v] for v in values]
    block.insert_op_before(ReturnOp(*probes), old_return)
    old_return.detach()
    old_return.erase()
    new_main.function_type = FunctionType.from_lists(list(new_main.function_type.inputs), [p.type for p in probes])
    new_main.res_attrs = None
    return Program(clone, store)


def progress(total: int, description: str) -> object:
    """A tqdm bar on stderr, silent when stderr is not a terminal or LAYERLOOM_NO_PROGRESS=1."""
    from tqdm import tqdm

    quiet = os.environ.get("LAYERLOOM_NO_PROGRESS", "") not in ("", "0") or not sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="batch", file=sys.stderr, disable=quiet, leave=False)


def observe(
    module: ModuleOp, store: WeightStore, values: Sequence[SSAValue], data: Sequence[Batch], calibrator: str,
    means: Sequence[tuple[SSAValue, PatchMean]] = (),
) -> list[TensorStats]:
    """Run the float program over every batch and return the statistics of each value;
    each (value, PatchMean) of `means` observes its value on the first run."""
    from backends.reference.executor import execute

    if calibrator not in CALIBRATORS:
        raise LayerloomError(f"unknown calibrator '{calibrator}' (one of {', '.join(CALIBRATORS)})", "quantize")
    stats = [TensorStats() for _ in values]
    probed = list(dict.fromkeys([*values, *(v for v, _ in means)]))
    if not probed:
        return stats
    index = {v: i for i, v in enumerate(probed)}
    probe = probe_program(module, store, probed)
    passes = ["range"] + (["histogram"] if calibrator != "minmax" else [])
    bar = progress(len(passes) * len(data), "calibrating")
    try:
        for kind in passes:
            for batch in data:
                outputs = list(execute(probe, batch).values())
                for s, v in zip(stats, values, strict=True):
                    if kind == "range":
                        s.observe_range(outputs[index[v]])
                    else:
                        s.observe_histogram(outputs[index[v]])
                if kind == "range":
                    for v, mean in means:
                        mean.observe(outputs[index[v]])
                bar.update(1)  # type: ignore[attr-defined]
    finally:
        bar.close()  # type: ignore[attr-defined]
    return stats
