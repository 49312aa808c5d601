// layerloom HLS library: the 16-bit float type `layerloom::half` (IEEE binary16).
//
// - Vitis HLS: the vendor's `half` from <hls_half.h>.
// - g++ / clang++ with _Float16 (GCC >= 12 and clang on x86-64 and AArch64): _Float16.
//   Each operation is computed in float and rounded to half (no excess precision is
//   carried across operations), which is also what NumPy's float16 does.
// - Anywhere else, or with -DLAYERLOOM_SOFT_HALF: a small struct of our own holding the
//   16 bits, converting to float for every operation and rounding back to nearest even.
//   It gives the same bits as the _Float16 path (tests/test_hls_templates.py checks both).
#pragma once

#include <cstdint>
#include <cstring>

#include "shim.h"

#if defined(LAYERLOOM_VITIS) && !defined(LAYERLOOM_SOFT_HALF)
#include <hls_half.h>
namespace layerloom {
using half = ::half;
}
#elif defined(__FLT16_MAX__) && !defined(LAYERLOOM_SOFT_HALF)
namespace layerloom {
using half = _Float16;
}
#else
#define LAYERLOOM_HALF_IS_STRUCT 1
namespace layerloom {

// float -> binary16 bits, rounding to nearest, ties to even (overflow to infinity).
inline uint16_t half_bits_from_float(float value) {
    uint32_t x;
    std::memcpy(&x, &value, sizeof x);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t magnitude = x & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) {  // infinity or NaN (quiet)
        return uint16_t(sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u));
    }
    if (magnitude >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to infinity
    if (magnitude < 0x38800000u) {                                   // below 2^-14: subnormal or zero
        const int exponent = int(magnitude >> 23);
        if (exponent < 102) return sign;  // below 2^-25: rounds to zero
        const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        const int shift = 126 - exponent;  // value = (mantissa >> shift) units of 2^-24
        uint32_t bits = mantissa >> shift;
        const uint32_t rest = mantissa & ((1u << shift) - 1);
        const uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (bits & 1u))) ++bits;
        return uint16_t(sign | bits);
    }
    uint32_t bits = (magnitude - 0x38000000u) >> 13;  // rebias the exponent 127 -> 15
    const uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (bits & 1u))) ++bits;  // a carry moves into the exponent
    return uint16_t(sign | bits);
}

inline float float_from_half_bits(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    uint32_t x;
    if (exponent == 0) {
        const float magnitude = float(mantissa) * (1.0f / 16777216.0f);  // subnormal: mantissa * 2^-24, exact
        std::memcpy(&x, &magnitude, sizeof x);
        x |= sign;
    } else if (exponent == 31) {
        x = sign | 0x7f800000u | (mantissa << 13);
    } else {
        x = sign | ((exponent + 112) << 23) | (mantissa << 13);
    }
    float value;
    std::memcpy(&value, &x, sizeof value);
    return value;
}

struct half {
    uint16_t bits;

    half() = default;
    half(float value) : bits(half_bits_from_float(value)) {}  // NOLINT: implicit, as _Float16
    operator float() const { return float_from_half_bits(bits); }

    half& operator+=(half other) { return *this = half(float(*this) + float(other)); }
    half& operator-=(half other) { return *this = half(float(*this) - float(other)); }
    half& operator*=(half other) { return *this = half(float(*this) * float(other)); }
    half& operator/=(half other) { return *this = half(float(*this) / float(other)); }
};

inline half operator+(half a, half b) { return half(float(a) + float(b)); }
inline half operator-(half a, half b) { return half(float(a) - float(b)); }
inline half operator*(half a, half b) { return half(float(a) * float(b)); }
inline half operator/(half a, half b) { return half(float(a) / float(b)); }
inline half operator-(half a) { return half(-float(a)); }
inline bool operator<(half a, half b) { return float(a) < float(b); }
inline bool operator>(half a, half b) { return float(a) > float(b); }
inline bool operator<=(half a, half b) { return float(a) <= float(b); }
inline bool operator>=(half a, half b) { return float(a) >= float(b); }
inline bool operator==(half a, half b) { return float(a) == float(b); }
inline bool operator!=(half a, half b) { return float(a) != float(b); }

}  // namespace layerloom
#endif

namespace layerloom {
static_assert(sizeof(half) == 2, "layerloom::half must be 16 bits (arrays of it are IEEE binary16 data)");
}
