// layerloom HLS library: the integer semantics of docs/quantization.md, transcribed 1:1.
//
// Every function here is the C++ of one rule of the spec (section numbers below) and gives
// the same bits as its NumPy twin in compiler/quant/intmath.py (checked exhaustively by
// tests/test_hls_templates.py). Intermediate results are int64 unless the spec says
// int32. `>>` on a negative value is an arithmetic shift (g++, clang and Vitis HLS all
// define it so); left shifts of possibly negative values are written as multiplications,
// which C++17 defines.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "shim.h"

namespace layerloom {

constexpr int32_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();

// Section 2: "saturate to [lo, hi]".
inline int64_t saturate(int64_t value, int64_t lo, int64_t hi) {
    return value < lo ? lo : (value > hi ? hi : value);
}

// value * 2^shift, 0 <= shift <= 62 (exact for the spec's ranges; defined for negatives).
inline int64_t shift_left(int64_t value, int shift) { return value * (int64_t(1) << shift); }

// Section 3, pow2 rounding: (v + 2^(s-1)) >> s for s > 0 (ties toward +inf), v for s == 0,
// v << -s for s < 0.
inline int64_t rounding_shift_right(int64_t value, int shift) {
    if (shift > 0) return (value + (int64_t(1) << (shift - 1))) >> shift;
    if (shift == 0) return value;
    return shift_left(value, -shift);
}

// Section 3: round_half_up(x * m / 2^s); x int32, 1 <= m < 2^16, -16 <= s <= 48.
inline int64_t requantize_pow2(int32_t x, int32_t multiplier, int32_t shift) {
    return rounding_shift_right(int64_t(x) * multiplier, shift);
}

// Section 4: gemmlowp's SaturatingRoundingDoublingHighMul, a*b / 2^31 rounded to nearest,
// ties toward +inf, with (-2^31) * (-2^31) saturated to 2^31 - 1.
inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == b && a == kInt32Min) return kInt32Max;
    const int64_t ab = int64_t(a) * b;
    const int64_t nudge = ab >= 0 ? (int64_t(1) << 30) : 1 - (int64_t(1) << 30);
    return int32_t((ab + nudge) / (int64_t(1) << 31));  // C division truncates toward zero
}

// Section 4: gemmlowp's RoundingDivideByPOT, x / 2^e rounded to nearest, ties away from zero.
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
    const int64_t mask = (int64_t(1) << exponent) - 1;
    const int64_t remainder = int64_t(x) & mask;
    const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return int32_t((int64_t(x) >> exponent) + (remainder > threshold ? 1 : 0));
}

// Section 4: x * M0 * 2^-31 * 2^-s; s counts right shifts, -31 <= s <= 31.
inline int32_t requantize_fixed(int32_t x, int32_t multiplier, int32_t shift) {
    const int left = shift < 0 ? -shift : 0;
    const int right = shift > 0 ? shift : 0;
    const int32_t shifted = int32_t(saturate(shift_left(x, left), kInt32Min, kInt32Max));
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right);
}

// The two requantization schemes; a template parameter, so a kernel carries only the one
// datapath its layer uses.
enum class Scheme { pow2, fixed };

// One (multiplier, shift) pair. pow2: m in [1, 2^16) (1 for conv / gemm), s in [-16, 48];
// fixed: M0 in [2^30, 2^31) or 0 (flushed), s in [-31, 31].
struct Requant {
    int32_t multiplier;
    int32_t shift;
};

template <Scheme S>
inline int64_t requantize(int32_t x, Requant r) {
    if constexpr (S == Scheme::pow2) {
        return requantize_pow2(x, r.multiplier, r.shift);
    } else {
        return requantize_fixed(x, r.multiplier, r.shift);
    }
}

// Section 5: the output stage of conv / gemm (and of add, concat, requantize and average
// pooling, which reuse it): requantize the int32 accumulator with the parameters of
// channel c (C == 1: one set for the tensor), requantize negative accumulators with the
// `negative` set instead when `leaky`, add the zero point, saturate to [lo, hi] (the
// type's range narrowed by a fused relu / relu6 / clip).
// Aggregate, so that generated code writes it as data:
//   OutputStage<Scheme::pow2, int8_t, 4> stage = {{{1, 8}, {1, 8}, {1, 7}, {1, 8}}, 0, 0, 127};
template <Scheme S, class Out, int C = 1>
struct OutputStage {
    using out_t = Out;
    Requant requant[C];
    int32_t zero_point;
    int32_t lo;
    int32_t hi;
    bool leaky = false;
    Requant negative[C] = {};

    Out apply(int32_t acc, int c) const {
        LL_INLINE();
        const int i = C == 1 ? 0 : c;
        int64_t value = requantize<S>(acc, requant[i]);
        if (leaky && acc < 0) value = requantize<S>(acc, negative[i]);
        return Out(saturate(value + zero_point, lo, hi));
    }
};

// Section 6, add: each operand to the common scale s_m, the exact sum, one output stage.
template <Scheme S, class Out>
struct AddStage {
    using out_t = Out;
    int32_t zero_point_a;
    int32_t zero_point_b;
    Requant operand_a;
    Requant operand_b;
    OutputStage<S, Out, 1> out;

    template <class A, class B>
    Out apply(A a, B b) const {
        LL_INLINE();
        const int64_t ta = requantize<S>(int32_t(a) - zero_point_a, operand_a);
        const int64_t tb = requantize<S>(int32_t(b) - zero_point_b, operand_b);
        return out.apply(int32_t(ta + tb), 0);  // |ta + tb| < 2^26 by the spec's guard bits
    }
};

// Section 6, concat operand / qnn.requantize: y = output_stage(q - z) with one parameter set.
template <Scheme S, class Out>
struct Rescale {
    using out_t = Out;
    int32_t zero_point;  // of the input
    OutputStage<S, Out, 1> out;

    template <class In>
    Out apply(In q) const {
        LL_INLINE();
        return out.apply(int32_t(int64_t(q) - zero_point), 0);
    }
};

// Section 7, average pooling: the window sum of (q - z_x) with parameter set n - 1 of a
// stage holding one set per possible count n (1 .. kH * kW; one for global pooling).
template <Scheme S, class Out, int Counts>
inline Out average_divide(int32_t sum, int count, const OutputStage<S, Out, Counts>& stage) {
    return stage.apply(sum, count - 1);
}

// The smallest value of an 8-bit type: qmin of the spec's tables.
template <class In>
constexpr int qmin() {
    return int(std::numeric_limits<In>::min());
}

// Section 8: y = table[q - qmin].
template <class In, class Out>
inline Out lookup(In q, const Out table[256]) {
    return table[int(q) - qmin<In>()];
}

template <class In, class Out>
struct Lookup {
    using out_t = Out;
    Out table[256];

    Out apply(In q) const { return lookup(q, table); }
};

// Round to nearest, ties to even, on float: what ONNX QuantizeLinear (and NumPy's rint)
// does. Exact: v - floor(v) is exact for every float, and large floats are integers.
inline float round_half_even(float v) {
    const float lower = std::floor(v);
    const float diff = v - lower;
    if (diff > 0.5f) return lower + 1.0f;
    if (diff < 0.5f) return lower;
    const float half_lower = lower * 0.5f;
    return std::floor(half_lower) == half_lower ? lower : lower + 1.0f;  // the tie: to the even one
}

// Section 9, the first quantize: saturate(round_half_even(x / s) + z), in float32.
template <class Out>
struct Quantize {
    using out_t = Out;
    float scale;
    int32_t zero_point;

    Out apply(float x) const {
        const float lo = float(int(std::numeric_limits<Out>::min()) - zero_point);
        const float hi = float(int(std::numeric_limits<Out>::max()) - zero_point);
        float q = round_half_even(x / scale);
        q = q < lo ? lo : (q > hi ? hi : q);  // clamping first is the same: the bounds are integers
        return Out(int32_t(q) + zero_point);
    }
};

// Section 9, the last dequantize: float32((q - z) * s).
template <class In>
struct Dequantize {
    using out_t = float;
    float scale;
    int32_t zero_point;

    float apply(In q) const { return float(int32_t(q) - zero_point) * scale; }
};

}  // namespace layerloom
