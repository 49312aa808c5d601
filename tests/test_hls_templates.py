"""The HLS template library (backends/hls/include/layerloom) compiled with g++ and run.

Every C++ test source in tests/hls is compiled with -Wall -Wextra -Werror (one shared
object per family, all built up front, two at a time, cached by content under build/).
The integer templates are compared bit for bit with compiler/quant/intmath.py (the rules)
and with an int64 NumPy convolution / pooling computed here; float templates with NumPy
within float32 rounding; half templates within the stated error bound of docs/hls.md.
Each C++ library lists its cases (shapes, types, PEs) in `layerloom_cases()`.
"""

from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from backends.hls import csim
from compiler.errors import LayerloomError
from compiler.quant import intmath as im

ROOT = Path(__file__).resolve().parents[1]
SOURCES = Path(__file__).resolve().parent / "hls"
CACHE = ROOT / "build" / "csim-tests"

# name -> (sources, extra flags, shared object?)
LIBRARIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "quant": (("quant.cpp",), (), True),
    "conv_int8": (("conv_int8.cpp",), (), True),
    "pool_eltwise_int8": (("pool_eltwise_int8.cpp",), (), True),
    "float_half": (("float_half.cpp",), (), True),
    "float_half_soft": (("float_half.cpp",), ("-DLAYERLOOM_SOFT_HALF",), True),
    "spec_examples": (("spec_examples.cpp",), (), False),
    "example_top": (("example_top.cpp", "example_top_tb.cpp"), (), True),
}

INT_DTYPES = {"i8": np.int8, "u8": np.uint8, "i32": np.int32}
FLOAT_DTYPES = {"f32": np.float32, "f16": np.float16}
DTYPES = {**INT_DTYPES, **FLOAT_DTYPES}


def build_library(name: str) -> Path:
    sources, flags, shared = LIBRARIES[name]
    return csim.build([SOURCES / s for s in sources], [SOURCES], CACHE, flags, shared=shared, name=name)


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """Every test library, compiled two at a time (a failure surfaces in the test that needs it)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(build_library, name) for name in LIBRARIES}
    results: dict[str, Path] = {}
    for name, future in futures.items():
        if future.exception() is None:
            results[name] = future.result()
    return results


def library(built: dict[str, Path], name: str) -> csim.SharedLibrary:
    return csim.load(built.get(name) or build_library(name))  # a failed build raises its error here


@dataclass(frozen=True)
class Case:
    name: str
    fields: dict[str, str]

    def __getitem__(self, key: str) -> int:
        return int(self.fields[key])

    def text(self, key: str) -> str:
        return self.fields[key]


def cases(lib: csim.SharedLibrary, kind: str) -> Iterator[Case]:
    function = lib.cdll.layerloom_cases
    function.restype = ctypes.c_char_p
    for line in function().decode().splitlines():
        name, *pairs = line.split()
        fields = dict(pair.split("=", 1) for pair in pairs)
        if fields["kind"] == kind:
            yield Case(name, fields)


# ---------------------------------------------------------------------------------------
# Compilation and the csim helper itself
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_every_test_source_compiles_warning_free(built: dict[str, Path], name: str) -> None:
    path = built.get(name) or build_library(name)
    assert path.exists() and path.parent == CACHE


def test_second_build_is_a_cache_hit(tmp_path: Path) -> None:
    source = tmp_path / "hello.cpp"
    source.write_text('#include "layerloom/quant.h"\nint main() { return int(layerloom::saturate(300, -128, 127)) - 127; }\n')
    first = csim.build([source], out_dir=tmp_path / "out")
    stamp = first.stat().st_mtime_ns
    assert csim.build([source], out_dir=tmp_path / "out") == first and first.stat().st_mtime_ns == stamp
    assert csim.run(first) == ""
    source.write_text(source.read_text().replace("- 127", "- 126"))  # new content, new binary
    second = csim.build([source], out_dir=tmp_path / "out")
    assert second != first
    with pytest.raises(LayerloomError, match="exited with status 1"):
        csim.run(second)


def test_compile_error_names_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "broken.cpp"
    source.write_text("int main() {\n  int unused = 3;\n  return 0;\n}\n")  # -Werror=unused-variable
    with pytest.raises(LayerloomError) as error:
        csim.build([source], out_dir=tmp_path)
    assert error.value.where == f"{source}:2"
    assert "unused variable" in error.value.message
    assert not list(tmp_path.glob("broken-*")) and not list(tmp_path.glob(".broken*"))


def test_missing_compiler_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "x.cpp"
    source.write_text("int main() { return 0; }\n")
    monkeypatch.setenv("CXX", "no-such-g++")
    with pytest.raises(LayerloomError, match="'no-such-g\\+\\+' not found"):
        csim.build([source], out_dir=tmp_path)


def test_library_errors_become_layerloom_errors(built: dict[str, Path]) -> None:
    """A template that reads a stream dry fails with the shim's message, through check()."""
    lib = library(built, "quant")
    lib.check("ll_read_from_empty_stream", 3)  # three values for three reads: fine
    with pytest.raises(LayerloomError, match="ll_read_from_empty_stream failed: hls::stream 'short' read while empty"):
        lib.check("ll_read_from_empty_stream", 2)
    with pytest.raises(LayerloomError, match="has no function 'nope'"):
        lib.call("nope")


# ---------------------------------------------------------------------------------------
# quant.h against intmath.py: every rule, exhaustive on the edge cases
# ---------------------------------------------------------------------------------------

EDGE_INT32 = np.array(
    [im.INT32_MIN, im.INT32_MIN + 1, -(2**30) - 1, -(2**30), -(2**24), -65536, -641, -640, -639, -256, -129, -128,
     -10, -5, -3, -2, -1, 0, 1, 2, 3, 5, 10, 127, 128, 255, 256, 639, 640, 641, 65535, 2**24, 2**30, im.INT32_MAX - 1,
     im.INT32_MAX],
    dtype=np.int64,
)


def vectorised(lib: csim.SharedLibrary, function: str, *arrays: np.ndarray) -> np.ndarray:
    columns = [np.ascontiguousarray(a, dtype=np.int64).ravel() for a in np.broadcast_arrays(*arrays)]
    out = np.zeros_like(columns[0])
    lib.check(function, *columns, out, out.size)
    return out.reshape(np.broadcast_shapes(*(a.shape for a in arrays)))


def random_int32(rng: np.random.Generator, n: int) -> np.ndarray:
    """Values at every magnitude, not only near 2^31."""
    magnitude = rng.integers(0, 32, n)
    return rng.integers(-(2**magnitude), 2**magnitude, dtype=np.int64).clip(im.INT32_MIN, im.INT32_MAX)


def test_pow2_rules_match_intmath_exhaustively(built: dict[str, Path]) -> None:
    lib = library(built, "quant")
    shifts = np.arange(-16, 49)
    x, s = np.meshgrid(EDGE_INT32, shifts, indexing="ij")
    m = np.where(s < 0, 1, 1)
    np.testing.assert_array_equal(vectorised(lib, "ll_requantize_pow2", x, m, s), im.requantize_pow2(x, m, s))
    # multipliers (average pooling, leaky slope) with every shift, including the ties
    rng = np.random.default_rng(1)
    xs = np.concatenate([EDGE_INT32, random_int32(rng, 600)])
    ms = np.concatenate([[1, 2, 3, 6554, 58254, 2**16 - 1], rng.integers(1, 2**16, 60)])
    x, m, s = np.meshgrid(xs, ms, np.arange(0, 49), indexing="ij")
    np.testing.assert_array_equal(vectorised(lib, "ll_requantize_pow2", x, m, s), im.requantize_pow2(x, m, s))
    v = np.concatenate([x.ravel()[:5000] * 65535, [2**46, -(2**46), -(2**46) - 1]])
    sv = np.resize(np.arange(-16, 49), v.size)
    np.testing.assert_array_equal(vectorised(lib, "ll_rounding_shift_right", v, sv), im.rounding_shift_right(v, sv))


def test_fixed_rules_match_intmath_exhaustively(built: dict[str, Path]) -> None:
    lib = library(built, "quant")
    rng = np.random.default_rng(2)
    a, b = np.meshgrid(EDGE_INT32, EDGE_INT32, indexing="ij")
    np.testing.assert_array_equal(vectorised(lib, "ll_srdhm", a, b), im.saturating_rounding_doubling_high_mul(a, b))
    x, e = np.meshgrid(np.concatenate([EDGE_INT32, random_int32(rng, 500)]), np.arange(0, 32), indexing="ij")
    np.testing.assert_array_equal(vectorised(lib, "ll_rdbpot", x, e), im.rounding_divide_by_pot(x, e))
    # requantize_fixed over edge and random accumulators, edge and random multipliers, every shift
    m0 = np.concatenate([[0, 2**30, 2**30 + 1, 1099511628, 1908874354, 1610612736, 2**31 - 1],
                         rng.integers(2**30, 2**31, 60)])
    xs = np.concatenate([EDGE_INT32, random_int32(rng, 400)])
    x, m, s = np.meshgrid(xs, m0, np.arange(-31, 32), indexing="ij")
    np.testing.assert_array_equal(vectorised(lib, "ll_requantize_fixed", x, m, s), im.requantize_fixed(x, m, s))


@pytest.mark.parametrize("scheme", ["pow2", "fixed"])
@pytest.mark.parametrize("out", [(0, -128, 127), (-5, -5, 127), (128, 0, 255), (3, -20, 40)])
def test_output_stage_matches_intmath(built: dict[str, Path], scheme: str, out: tuple[int, int, int]) -> None:
    """Requantize, leaky negative parameters, zero point and clamp, per value."""
    lib = library(built, "quant")
    rng = np.random.default_rng(3)
    zero_point, lo, hi = out
    acc = np.concatenate([EDGE_INT32, random_int32(rng, 4000)])
    n = acc.size
    if scheme == "fixed":
        m, s = im.quantize_multipliers(np.exp2(rng.uniform(-24, 4, n)))
        nm, ns = im.quantize_multipliers(np.exp2(rng.uniform(-24, 4, n)) * 0.1)
    else:
        m, s = np.ones(n, np.int64), rng.integers(-8, 40, n)
        m = np.where(s >= 0, rng.integers(1, 2**16, n), 1)
        nm, ns = np.full(n, im.pow2_alpha(0.1)), np.maximum(s, 0) + 16
    params = np.stack([m, s, nm, ns], axis=1).astype(np.int64)
    for leaky in (False, True):
        negative = im.Requant.of(scheme, ns, nm) if leaky else None
        expected = im.OutputStage(im.Requant.of(scheme, s, m), zero_point, lo, hi, negative)(acc)
        got = np.zeros(n, np.int64)
        lib.check("ll_output_stage", acc, params, got, n, scheme == "fixed", leaky, zero_point, lo, hi)
        np.testing.assert_array_equal(got, expected)


def test_round_half_even_matches_numpy(built: dict[str, Path]) -> None:
    lib = library(built, "quant")
    rng = np.random.default_rng(4)
    ties = np.arange(-300, 300, dtype=np.float32) + np.float32(0.5)
    x = np.concatenate([ties, rng.normal(0, 1e3, 4000).astype(np.float32), np.float32([2**23 + 1, -(2**24), 1e30, -0.0])])
    y = np.zeros_like(x)
    lib.check("ll_round_half_even", x, y, x.size)
    np.testing.assert_array_equal(y, np.rint(x))


# ---------------------------------------------------------------------------------------
# Layer references (int64 / float64 NumPy, written here independently of the templates)
# ---------------------------------------------------------------------------------------


def conv_reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray, case: Case, groups: int,
                   dtype: type = np.int64) -> np.ndarray:
    """x (C, H, W), already centred (x - z_x); w (M, C/G, KH, KW), centred; bias (M,).
    Zero padding (the centred zero point); group g reads channels g*C/G.. of x."""
    c, h, wd = x.shape
    m = w.shape[0]
    oh, ow = case["OH"], case["OW"]
    padded = np.zeros((c, h + case["PT"] + case["PB"], wd + case["PL"] + case["PR"]), dtype)
    padded[:, case["PT"] : case["PT"] + h, case["PL"] : case["PL"] + wd] = x
    acc = np.zeros((m, oh, ow), dtype) + bias.astype(dtype)[:, None, None]
    cg, mg = c // groups, m // groups
    for i in range(case["KH"]):
        for j in range(case["KW"]):
            top, left = i * case["DH"], j * case["DW"]
            patch = padded[:, top : top + case["SH"] * (oh - 1) + 1 : case["SH"], left : left + case["SW"] * (ow - 1) + 1 : case["SW"]]
            for g in range(groups):
                acc[g * mg : (g + 1) * mg] += np.einsum("mc,chw->mhw", w[g * mg : (g + 1) * mg, :, i, j], patch[g * cg : (g + 1) * cg])
    return acc


def to_hwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(1, 2, 0)).ravel()


def from_hwc(y: np.ndarray, channels: int, oh: int, ow: int) -> np.ndarray:
    return y.reshape(oh, ow, channels).transpose(2, 0, 1)


def conv_geometry(case: Case) -> tuple[int, int]:
    """(groups as a convolution, weight columns per output): depthwise is group C."""
    if case.text("impl") == "depthwise":
        return case["C"], case["KH"] * case["KW"]
    return case["G"], case["C"] // case["G"] * case["KH"] * case["KW"]


@dataclass(frozen=True)
class IntStageParams:
    """A random integer output stage for `channels` parameter sets: intmath's OutputStage
    (laid along axis 0 of a (channels, ...) tensor) and the packed int64 buffer of harness.h."""

    stage: im.OutputStage
    packed: np.ndarray


def int_type_range(dtype_name: str) -> tuple[int, int]:
    return im.int_range(INT_DTYPES[dtype_name])


def random_zero_point(rng: np.random.Generator, scheme: str, dtype_name: str) -> int:
    if scheme == "pow2" and dtype_name == "i8":
        return 0
    lo, hi = int_type_range(dtype_name)
    middle = (lo + hi + 1) // 2
    return int(rng.integers(middle - 20, middle + 20))


def int_stage(
    rng: np.random.Generator, scheme: str, channels: int, gain: float, out: str, variant: str,
    input_zero_point: int = 0, weight_zero_point: int = 0, ndim: int = 3,
) -> IntStageParams:
    """Multipliers around `gain` (the real factor that maps typical accumulators into the
    int8 range); variant: 'plain', 'relu' (clamp at the zero point) or 'leaky' (alpha 0.1)."""
    reals = gain * np.exp2(rng.uniform(-1, 1, channels))
    if scheme == "fixed":
        m, s = im.quantize_multipliers(reals)
        nm, ns = im.quantize_multipliers(reals * 0.1)
    else:
        s = np.round(-np.log2(reals)).astype(np.int64)
        m = np.ones(channels, np.int64)
        nm, ns = np.full(channels, im.pow2_alpha(0.1)), s + 16
    zero_point = random_zero_point(rng, scheme, out)
    lo, hi = int_type_range(out)
    if variant == "relu":
        lo = max(lo, zero_point)
    leaky = variant == "leaky"
    negative = im.Requant.of(scheme, ns, nm).along(ndim, 0) if leaky else None
    stage = im.OutputStage(im.Requant.of(scheme, s, m).along(ndim, 0), zero_point, lo, hi, negative)
    packed = np.concatenate([[input_zero_point, weight_zero_point, zero_point, lo, hi, int(leaky)], m, s, nm, ns])
    return IntStageParams(stage, packed.astype(np.int64))


def random_ints(rng: np.random.Generator, dtype_name: str, shape: tuple[int, ...], extreme: bool = False) -> np.ndarray:
    lo, hi = int_type_range(dtype_name)
    if extreme:
        return rng.choice(np.array([lo, hi]), shape).astype(INT_DTYPES[dtype_name])
    return rng.integers(lo, hi + 1, shape).astype(INT_DTYPES[dtype_name])


VARIANTS = ("plain", "relu", "leaky")


def test_int8_convolutions_are_bit_exact(built: dict[str, Path]) -> None:
    """conv2d (direct, im2row), depthwise, pointwise and dense, every case of
    tests/hls/conv_int8.cpp, in both schemes, plain / relu / leaky, against the int64
    convolution and intmath's output stage."""
    lib = library(built, "conv_int8")
    rng = np.random.default_rng(5)
    checked = 0
    for case in cases(lib, "conv"):
        groups, k = conv_geometry(case)
        c, h, w, m = case["C"], case["H"], case["W"], case["M"]
        extreme = k > 500
        x = random_ints(rng, case.text("in"), (c, h, w), extreme)
        weights = random_ints(rng, "i8", (m, c // groups, case["KH"], case["KW"]), extreme)
        weight_zero_point = 0
        if case.text("weight") == "u8":
            weights = (weights.astype(np.int64) + 128).astype(np.uint8)
            weight_zero_point = int(rng.integers(100, 156))
        bias = rng.integers(-(2**12), 2**12, m).astype(np.int32)
        scheme, out = case.text("stage"), case.text("out")
        input_zero_point = random_zero_point(rng, scheme, case.text("in"))
        spread = np.sqrt(k) * 74.0 * 74.0  # std of a sum of k products of uniform int8s
        reference = conv_reference(x.astype(np.int64) - input_zero_point, weights.astype(np.int64) - weight_zero_point,
                                   bias, case, groups)
        for variant in VARIANTS:
            params = int_stage(rng, scheme, m, 40.0 / spread, out, variant, input_zero_point, weight_zero_point)
            (y,) = lib.predict(case.name, [to_hwc(x), weights.reshape(m, k), bias, params.packed],
                               [((case["OH"] * case["OW"] * m,), DTYPES[out])])
            expected = params.stage(reference)
            np.testing.assert_array_equal(from_hwc(y, m, case["OH"], case["OW"]), expected, err_msg=f"{case.name} {variant}")
            assert len(np.unique(expected)) >= min(10, expected.size // 2), f"{case.name}: outputs too saturated to test"
            checked += 1
    assert checked >= 3 * 15


def padded_extent(size: int, pad_begin: int, pad_end: int, out: int, stride: int, kernel: int, dilation: int) -> int:
    """Padded length an axis needs, with ceil mode's windows past the end."""
    return max(size + pad_begin + pad_end, (out - 1) * stride + dilation * (kernel - 1) + 1)


def window_taps(x: np.ndarray, case: Case, fill: float) -> np.ndarray:
    """(KH*KW, C, OH, OW): the input under each tap of each window, padding = fill."""
    c, h, w = x.shape
    oh, ow = case["OH"], case["OW"]
    hx = padded_extent(h, case["PT"], case["PB"], oh, case["SH"], case["KH"], case["DH"])
    wx = padded_extent(w, case["PL"], case["PR"], ow, case["SW"], case["KW"], case["DW"])
    padded = np.full((c, hx, wx), fill, dtype=x.dtype)
    padded[:, case["PT"] : case["PT"] + h, case["PL"] : case["PL"] + w] = x
    return np.stack([
        padded[:, i * case["DH"] : i * case["DH"] + case["SH"] * (oh - 1) + 1 : case["SH"],
               j * case["DW"] : j * case["DW"] + case["SW"] * (ow - 1) + 1 : case["SW"]]
        for i in range(case["KH"]) for j in range(case["KW"])
    ])


def window_counts(case: Case, include_pad: bool) -> np.ndarray:
    """(OH, OW) ONNX divisors: taps inside the input (plus the declared pads with
    count_include_pad; ceil mode's extra border never counts)."""
    def axis(size: int, out: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> np.ndarray:
        lo, hi = (begin, end) if include_pad else (0, 0)
        at = np.arange(out)[:, None] * stride - begin + np.arange(kernel)[None, :] * dilation
        return np.maximum(((at >= -lo) & (at < size + hi)).sum(axis=1), 1)

    rows = axis(case["H"], case["OH"], case["KH"], case["SH"], case["DH"], case["PT"], case["PB"])
    cols = axis(case["W"], case["OW"], case["KW"], case["SW"], case["DW"], case["PL"], case["PR"])
    return rows[:, None] * cols[None, :]


def average_params(rng: np.random.Generator, scheme: str, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Division parameters per window count n (spec section 7), at a random scale ratio."""
    if scheme == "fixed":
        ratio = float(np.float32(rng.uniform(0.5, 2.0)))
        return im.quantize_multipliers([ratio / n for n in counts])
    d = int(rng.integers(-1, 2))
    pairs = [im.pow2_divisor(n, d) for n in counts]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def pool_stage(rng: np.random.Generator, case: Case, counts: list[int], input_zero_point: int) -> IntStageParams:
    scheme, out = case.text("stage"), "u8" if case.text("in") == "u8" else "i8"
    m, s = average_params(rng, scheme, counts)
    zero_point = random_zero_point(rng, scheme, out)
    lo, hi = int_type_range(out)
    zeros = np.zeros(len(counts), np.int64)
    packed = np.concatenate([[input_zero_point, 0, zero_point, lo, hi, 0], m, s, zeros, zeros]).astype(np.int64)
    return IntStageParams(im.OutputStage(im.Requant.of(scheme, s, m), zero_point, lo, hi), packed)


def test_int8_pooling_is_bit_exact(built: dict[str, Path]) -> None:
    """Max / average / global pooling (ceil mode, dilations, count_include_pad, uint8)
    against NumPy windows and intmath's average_divide."""
    lib = library(built, "pool_eltwise_int8")
    rng = np.random.default_rng(6)
    checked = 0
    for case in cases(lib, "pool"):
        kind, dtype = case.text("pool"), case.text("in")
        x = random_ints(rng, dtype, (case["C"], case["H"], case["W"]))
        qmin = int_type_range(dtype)[0]
        channels_out = case["C"] * case["OH"] * case["OW"]
        if kind in ("max", "global_max"):
            expected = window_taps(x, case, qmin).max(axis=0)
            (y,) = lib.predict(case.name, [to_hwc(x), np.zeros(6, np.int64)], [((channels_out,), DTYPES[dtype])])
        else:
            include_pad = bool(case["INCLUDE_PAD"])
            scheme = case.text("stage")
            zero_point = random_zero_point(rng, scheme, dtype)
            sums = window_taps(x.astype(np.int64) - zero_point, case, 0).sum(axis=0)
            if kind == "global_avg":
                params = pool_stage(rng, case, [case["H"] * case["W"]], zero_point)
                expected = params.stage(sums)
            else:
                params = pool_stage(rng, case, list(range(1, case["KH"] * case["KW"] + 1)), zero_point)
                expected = im.average_divide(sums, np.broadcast_to(window_counts(case, include_pad), sums.shape), params.stage)
            out = "u8" if dtype == "u8" else "i8"
            (y,) = lib.predict(case.name, [to_hwc(x), params.packed], [((channels_out,), DTYPES[out])])
        np.testing.assert_array_equal(from_hwc(y, case["C"], case["OH"], case["OW"]), expected, err_msg=case.name)
        checked += 1
    assert checked == 10


def add_params(rng: np.random.Generator, scheme: str, out: str, variant: str) -> tuple[np.ndarray, tuple[im.Requant, im.Requant], im.OutputStage, tuple[int, int]]:
    """Random operand / output scales turned into spec section 6's parameters; returns the
    packed buffer, intmath's operand requants and output stage, and the operand zero points."""
    if scheme == "pow2":
        fa, fb, fy = (int(f) for f in rng.integers(2, 8, 3))
        big = max(fa, fb)
        (ma, sa), (mb, sb), (m, s) = (1, fa - big), (1, fb - big), (1, big - fy)
        za = zb = 0
    else:
        sa_, sb_, sy_ = (float(np.float32(v)) for v in rng.uniform(0.01, 0.2, 3))
        middle = max(sa_, sb_) / 2**im.ADD_GUARD_BITS
        (ma, sa), (mb, sb), (m, s) = (im.quantize_multiplier(v) for v in (sa_ / middle, sb_ / middle, middle / sy_))
        za, zb = (int(z) for z in rng.integers(-20, 20, 2))
    zy = random_zero_point(rng, scheme, out)
    lo, hi = int_type_range(out)
    if variant == "relu":
        lo = max(lo, zy)
    packed = np.array([za, zb, zy, lo, hi, ma, sa, mb, sb, m, s], np.int64)
    operands = (im.Requant.of(scheme, [sa], [ma]), im.Requant.of(scheme, [sb], [mb]))
    return packed, operands, im.OutputStage(im.Requant.of(scheme, [s], [m]), zy, lo, hi), (za, zb)


def test_int8_add_and_concat_are_bit_exact(built: dict[str, Path]) -> None:
    lib = library(built, "pool_eltwise_int8")
    rng = np.random.default_rng(7)
    for case in cases(lib, "add"):
        a_type, b_type, out = case.text("types").split(",")
        n = case["N"]
        for variant in ("plain", "relu"):
            packed, operands, stage, zero_points = add_params(rng, case.text("stage"), out, variant)
            if a_type == "u8":
                packed[0] += 128
                zero_points = (zero_points[0] + 128, zero_points[1])
            a, b = random_ints(rng, a_type, (n,)), random_ints(rng, b_type, (n,))
            (y,) = lib.predict(case.name, [a, b, packed], [((n,), DTYPES[out])])
            np.testing.assert_array_equal(y, im.add(a, b, zero_points, operands, stage), err_msg=f"{case.name} {variant}")
    for case in cases(lib, "concat"):
        a_type, b_type, out = case.text("types").split(",")
        pixels, ca, cb = case["N"], case["CA"], case["CB"]
        packed, operands, stage, zero_points = add_params(rng, case.text("stage"), out, "plain")
        if a_type == "u8":
            packed[0] += 128
            zero_points = (zero_points[0] + 128, zero_points[1])
        a, b = random_ints(rng, a_type, (pixels, ca)), random_ints(rng, b_type, (pixels, cb))
        (y,) = lib.predict(case.name, [a, b, packed], [((pixels * (ca + cb),), DTYPES[out])])
        parts = [im.rescale(q, z, im.OutputStage(r, stage.zero_point, stage.lo, stage.hi))
                 for q, z, r in zip((a, b), zero_points, operands, strict=True)]
        np.testing.assert_array_equal(y.reshape(pixels, ca + cb), np.concatenate(parts, axis=1), err_msg=case.name)


def test_int8_requantize_lookup_quantize_dequantize_are_bit_exact(built: dict[str, Path]) -> None:
    lib = library(built, "pool_eltwise_int8")
    rng = np.random.default_rng(8)
    n = 300
    # qnn.requantize: int8 -> uint8 (fixed), int32 accumulators -> int8 (both schemes)
    for name, source, scheme, out in [("requantize_i8_to_u8_fixed", "i8", "fixed", "u8"),
                                      ("requantize_i32_to_i8_pow2", "i32", "pow2", "i8"),
                                      ("requantize_i32_to_i8_fixed", "i32", "fixed", "i8")]:
        if source == "i32":
            x = rng.integers(-(2**20), 2**20, n).astype(np.int32)
            real = 2.0 ** -rng.uniform(8, 14)
        else:
            x = random_ints(rng, source, (n,))
            real = rng.uniform(0.3, 3.0)
        m, s = im.quantize_multiplier(real) if scheme == "fixed" else (1, round(-np.log2(real)))
        zx = int(rng.integers(-10, 10)) if scheme == "fixed" and source == "i8" else 0
        zy = random_zero_point(rng, scheme, out)
        lo, hi = int_type_range(out)
        packed = np.array([zx, 0, zy, lo, hi, m, s], np.int64)
        (y,) = lib.predict(name, [x, packed], [((n,), DTYPES[out])])
        expected = im.rescale(x, zx, im.OutputStage(im.Requant.of(scheme, [s], [m]), zy, lo, hi))
        np.testing.assert_array_equal(y, expected, err_msg=name)
    # qnn.lut: a sigmoid table (T1's parameters) on int8 and on uint8 inputs
    for name, source in [("lookup_i8", "i8"), ("lookup_u8_to_i8", "u8")]:
        in_range = int_type_range(source)
        zx = 0 if source == "i8" else 128
        table = im.build_table(im.TABLE_FUNCTIONS["sigmoid"], 1 / 16, zx, in_range, 1 / 128, 0, im.INT8_RANGE).astype(np.int8)
        x = random_ints(rng, source, (n,))
        (y,) = lib.predict(name, [x, table], [((n,), np.int8)])
        np.testing.assert_array_equal(y, im.lookup(x, table, in_range[0]), err_msg=name)
    # the first quantize (ties at scale 1 and at float32(0.1)) and the last dequantize
    ties = (np.arange(n) - n // 2).astype(np.float32) * np.float32(0.5)
    for name, out in [("quantize_i8", "i8"), ("quantize_u8", "u8")]:
        for scale, zero_point in [(1.0, 10 if out == "i8" else 128), (float(np.float32(0.1)), -3 if out == "i8" else 3)]:
            x = np.concatenate([ties[: n // 2] * np.float32(scale), rng.normal(0, 20 * scale, n - n // 2).astype(np.float32)])
            (y,) = lib.predict(name, [x, np.array([scale, zero_point], np.float64)], [((n,), DTYPES[out])])
            expected = im.quantize(x, scale, zero_point, *int_type_range(out))
            np.testing.assert_array_equal(y, expected, err_msg=f"{name} scale {scale}")
    q = random_ints(rng, "i8", (n,))
    (y,) = lib.predict("dequantize_i8", [q, np.array([0.5, 3], np.float64)], [((n,), np.float32)])
    np.testing.assert_array_equal(y, im.dequantize(q, 0.5, 3))


# ---------------------------------------------------------------------------------------
# Float and half templates
# ---------------------------------------------------------------------------------------

UNIT_ROUNDOFF = {"f32": 2.0**-24, "f16": 2.0**-11}
FLOAT_VARIANTS = {  # [lo, hi, leaky, alpha] of harness.h's float stage
    "plain": (-np.inf, np.inf, 0.0, 0.0),
    "relu": (0.0, np.inf, 0.0, 0.0),
    "relu6": (0.0, 6.0, 0.0, 0.0),
    "leaky": (-np.inf, np.inf, 1.0, 0.125),
}


def activation(y: np.ndarray, lo: float, hi: float, leaky: float, alpha: float) -> np.ndarray:
    return np.clip(np.where((y < 0) & (leaky != 0), y * alpha, y), lo, hi)


def random_floats(rng: np.random.Generator, dtype: str, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (rng.uniform(-scale, scale, shape)).astype(FLOAT_DTYPES[dtype])


def reduction_bound(abs_sum: np.ndarray, terms: int, dtype: str) -> np.ndarray:
    """The error bound of a sum of `terms` rounded products accumulated in `dtype`
    (recursive summation: gamma_(n+2) = (n + 2) u / (1 - (n + 2) u) times the sum of the
    magnitudes), the bound docs/hls.md states for float and half layers."""
    gamma = (terms + 2) * UNIT_ROUNDOFF[dtype]
    return gamma / (1 - gamma) * abs_sum + np.finfo(np.float32).tiny


def run_float_cases(lib: csim.SharedLibrary, dtype: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every float / half case of float_half.cpp on random inputs, checked against float64
    NumPy within the rounding bound; returns the raw outputs by case and variant."""
    outputs: dict[str, np.ndarray] = {}
    np_type = FLOAT_DTYPES[dtype]
    for case in cases(lib, "conv"):
        if case.text("in") != dtype:
            continue
        groups, k = conv_geometry(case)
        c, m = case["C"], case["M"]
        x = random_floats(rng, dtype, (c, case["H"], case["W"]), 2.0)
        w = random_floats(rng, dtype, (m, c // groups, case["KH"], case["KW"]))
        b = random_floats(rng, dtype, (m,))
        exact = conv_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), case, groups, np.float64)
        magnitude = conv_reference(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), np.abs(b.astype(np.float64)),
                                   case, groups, np.float64)
        for variant, params in FLOAT_VARIANTS.items():
            (y,) = lib.predict(case.name, [to_hwc(x), np.ascontiguousarray(w.reshape(m, k)), b, np.array(params)],
                               [((case["OH"] * case["OW"] * m,), np_type)])
            got = from_hwc(y, m, case["OH"], case["OW"]).astype(np.float64)
            bound = reduction_bound(magnitude, k + 1, dtype)  # + 1: the leaky slope's product
            np.testing.assert_array_less(np.abs(got - activation(exact, *params)), bound, err_msg=f"{case.name} {variant}")
            outputs[f"{case.name}/{variant}"] = y
    for case in cases(lib, "pool"):
        if case.text("in") != dtype:
            continue
        kind = case.text("pool")
        x = random_floats(rng, dtype, (case["C"], case["H"], case["W"]), 4.0)
        (y,) = lib.predict(case.name, [to_hwc(x), np.zeros(4)], [((case["C"] * case["OH"] * case["OW"],), np_type)])
        got = from_hwc(y, case["C"], case["OH"], case["OW"])
        if kind in ("max", "global_max"):
            np.testing.assert_array_equal(got, window_taps(x, case, -np.inf).max(axis=0), err_msg=case.name)
        else:
            taps = window_taps(x.astype(np.float64), case, 0.0)
            counts = window_counts(case, bool(case["INCLUDE_PAD"])) if kind == "avg" else case["H"] * case["W"]
            bound = reduction_bound(np.abs(taps).sum(axis=0) / counts, taps.shape[0] + 1, dtype)
            np.testing.assert_array_less(np.abs(got - taps.sum(axis=0) / counts), bound, err_msg=case.name)
        outputs[case.name] = y
    for case in cases(lib, "add"):
        if not case.text("types").startswith(dtype):
            continue
        a, b = random_floats(rng, dtype, (case["N"],), 4.0), random_floats(rng, dtype, (case["N"],), 4.0)
        for variant, (lo, hi, _, _) in FLOAT_VARIANTS.items():
            if variant == "leaky":
                continue
            (y,) = lib.predict(case.name, [a, b, np.array([lo, hi])], [((case["N"],), np_type)])
            np.testing.assert_array_equal(y, np.clip(a + b, lo, hi), err_msg=f"{case.name} {variant}")  # one rounding, as NumPy's
            outputs[f"{case.name}/{variant}"] = y
    for case in cases(lib, "concat"):
        if not case.text("types").startswith(dtype):
            continue
        a = random_floats(rng, dtype, (case["N"], case["CA"]))
        b = random_floats(rng, dtype, (case["N"], case["CB"]))
        (y,) = lib.predict(case.name, [a, b, np.zeros(1)], [((a.size + b.size,), np_type)])
        np.testing.assert_array_equal(y.reshape(case["N"], -1), np.concatenate([a, b], axis=1), err_msg=case.name)
    return outputs


def test_float_templates_match_numpy(built: dict[str, Path]) -> None:
    lib = library(built, "float_half")
    rng = np.random.default_rng(9)
    outputs = run_float_cases(lib, "f32", rng)
    assert len(outputs) == 6 * 4 + 5 + 3
    x = random_floats(rng, "f32", (100,), 8.0)
    for variant, params in FLOAT_VARIANTS.items():  # a standalone activation: exact
        (y,) = lib.predict("f32_activation", [x, np.array(params)], [((100,), np.float32)])
        np.testing.assert_array_equal(y, activation(x, *params).astype(np.float32), err_msg=variant)


def test_half_templates_within_the_stated_bound_and_soft_half_is_bit_identical(built: dict[str, Path]) -> None:
    native, soft = library(built, "float_half"), library(built, "float_half_soft")
    assert soft.call("ll_half_is_struct") == 1
    first = run_float_cases(native, "f16", np.random.default_rng(10))
    second = run_float_cases(soft, "f16", np.random.default_rng(10))
    assert first.keys() == second.keys() and len(first) == 6 * 4 + 5 + 3
    for key in first:
        np.testing.assert_array_equal(first[key].view(np.uint16), second[key].view(np.uint16), err_msg=key)


@pytest.mark.parametrize("name", ["float_half", "float_half_soft"])
def test_half_conversions_and_arithmetic_match_numpy_float16(built: dict[str, Path], name: str) -> None:
    """Every binary16 pattern to float and back; float to half on ties, subnormals,
    overflow; + - * / rounded once, as NumPy's float16."""
    lib = library(built, name)
    every = np.arange(2**16, dtype=np.uint16)
    as_float = np.zeros(every.size, np.float32)
    lib.check("ll_float_from_half", every, as_float, every.size)
    expected = every.view(np.float16).astype(np.float32)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(as_float[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert np.isnan(as_float[nan]).all()

    rng = np.random.default_rng(11)
    finite = expected[~nan & np.isfinite(expected)].astype(np.float64)
    neighbours = np.sort(np.unique(finite))
    midpoints = (neighbours[:-1] + neighbours[1:]) / 2  # ties: exact in float32
    x = np.concatenate([finite, midpoints, np.nextafter(midpoints, np.inf), np.nextafter(midpoints, -np.inf),
                        [65519.0, 65520.0, 1e6, -1e6, 2.0**-25, 2.0**-26, 3 * 2.0**-26, np.inf, -np.inf],
                        rng.normal(0, 100, 5000)]).astype(np.float32)
    bits = np.zeros(x.size, np.uint16)
    lib.check("ll_half_from_float", x, bits, x.size)
    with np.errstate(over="ignore"):  # the overflow to infinity is what is being checked
        np.testing.assert_array_equal(bits, x.astype(np.float16).view(np.uint16))

    a = rng.choice(finite, 20000).astype(np.float16)
    b = rng.choice(finite, 20000).astype(np.float16)
    b[b == 0] = np.float16(1.0)
    out = np.zeros(4 * a.size, np.float16)
    lib.check("ll_half_arithmetic", a, b, out, a.size)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        expected_ops = np.stack([a + b, a - b, a * b, a / b], axis=1).ravel()
    np.testing.assert_array_equal(out.view(np.uint16), expected_ops.view(np.uint16))


# ---------------------------------------------------------------------------------------
# The worked examples in C++, the example top function, the pragmas
# ---------------------------------------------------------------------------------------


def test_spec_worked_examples_pass_in_cpp(built: dict[str, Path]) -> None:
    binary = built.get("spec_examples") or build_library("spec_examples")
    assert csim.run(binary).strip() == "spec examples: 55 checks passed"


def example_case() -> Case:
    geometry = dict(C=1, H=8, W=8, KH=3, KW=3, SH=1, SW=1, PT=1, PL=1, PB=1, PR=1, DH=1, DW=1, OH=8, OW=8)
    return Case("example", {key: str(value) for key, value in geometry.items()})


def test_example_top_is_bit_exact_on_a_batch(built: dict[str, Path]) -> None:
    """tests/hls/example_top.cpp (DDR weights, axis streams, a DATAFLOW conv -> pool -> dense)
    through its ctypes predict, against NumPy and intmath."""
    lib = library(built, "example_top")
    rng = np.random.default_rng(12)
    batch, conv_shift, dense_shift = 3, 8, 10
    images = random_ints(rng, "i8", (batch, 1, 8, 8))
    conv_w, dense_w = random_ints(rng, "i8", (4, 1, 3, 3)), random_ints(rng, "i8", (10, 64))
    biases = rng.integers(-2000, 2000, 14).astype(np.int32)
    weights = np.concatenate([conv_w.ravel(), dense_w.ravel()])
    (scores,) = lib.predict("example_predict", [images, weights, biases], [((batch, 10), np.int8)],
                            conv_shift, dense_shift, batch)
    relu = im.OutputStage(im.Requant.of("pow2", [conv_shift]), 0, 0, 127)
    plain = im.OutputStage(im.Requant.of("pow2", [dense_shift]), 0, -128, 127)
    for image, got in zip(images, scores, strict=True):
        conv = relu(conv_reference(image.astype(np.int64), conv_w.astype(np.int64), biases[:4], example_case(), 1))
        pooled = conv.reshape(4, 4, 2, 4, 2).max(axis=(2, 4))
        expected = plain(dense_w.astype(np.int64) @ to_hwc(pooled) + biases[4:])  # dense reads the HWC order
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(expected)) > 5


def preprocess(source: Path, *flags: str) -> str:
    command = [csim.compiler(), "-std=c++17", "-E", f"-I{csim.INCLUDE_DIR}", f"-I{SOURCES}", *flags, str(source)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_pragmas_reach_vitis_only(tmp_path: Path) -> None:
    """Under __SYNTHESIS__ the HLS pragmas are emitted (and the Vitis headers used, not the
    shim); under plain g++ not one pragma is left for -Wall to complain about."""
    vitis = tmp_path / "vitis"
    vitis.mkdir()
    (vitis / "ap_int.h").write_text("#pragma once\n")
    (vitis / "hls_half.h").write_text("#pragma once\nstruct half { unsigned short bits; };\n")
    (vitis / "hls_stream.h").write_text(
        "#pragma once\nnamespace hls { template <class T> struct stream { explicit stream(const char* = 0) {}"
        " T read() { return T(); } void write(const T&) {} }; }\n")
    source = SOURCES / "example_top.cpp"
    synthesis = preprocess(source, f"-I{vitis}", "-D__SYNTHESIS__")
    for pragma in ["DATAFLOW", "PIPELINE II=1", "UNROLL", "INTERFACE axis port=input", "INTERFACE axis port=output",
                   "INTERFACE m_axi port=weights offset=slave bundle=gmem0", "INTERFACE s_axilite port=return bundle=control",
                   "ARRAY_PARTITION variable=weights type=cyclic factor=PE dim=1",
                   "ARRAY_PARTITION variable=acc type=complete dim=1", "STREAM variable=conv_out depth=64"]:
        assert f"#pragma HLS {pragma}" in synthesis, pragma
    assert "read while empty" not in synthesis  # the shim's stream is not compiled
    csim_with_vitis = preprocess(source, f"-I{vitis}")
    assert "#pragma HLS" not in csim_with_vitis and "read while empty" not in csim_with_vitis
    plain = preprocess(source)
    assert "#pragma HLS" not in plain and "read while empty" in plain


def test_the_by_hand_command_of_docs_hls_works(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "hls.md").read_text()
    (command,) = [line for line in doc.splitlines() if line.startswith("g++ ")]
    result = subprocess.run(command.replace("build/", f"{tmp_path}/"), shell=True, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "spec examples: 55 checks passed"
