// layerloom HLS library: what the layer templates need to know about an element type.
//
// The layer templates are written once for every data type: int8 / uint8 activations with
// int8 weights and int32 accumulation (bit-exact with the qnn reference), float, and half.
// They touch values only through the traits below and through a "stage", the object that
// turns an accumulator into an output value:
//   - integer layers: OutputStage / AddStage / Rescale / Lookup of quant.h;
//   - float and half layers: Activation / Average / FloatAdd / Copy / Convert below.
// A stage names its result type `out_t` and has `apply(...)`.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "half.h"
#include "shim.h"

namespace layerloom {

// A parameter type that template argument deduction skips (std::type_identity_t of C++20):
// zero points take the stream's element type even when the caller writes a plain `3`.
template <class T>
struct identity {
    using type = T;
};
template <class T>
using nondeduced = typename identity<T>::type;

// The accumulator of a multiply-accumulate over T: int32 for the 8-bit integer types (the
// spec's exact accumulator), the type itself for float and half (half layers compute in
// half, as STANN's half variant does; see docs/hls.md for the error bound).
template <class T>
struct accumulator {
    using type = T;
};
template <>
struct accumulator<int8_t> {
    using type = int32_t;
};
template <>
struct accumulator<uint8_t> {
    using type = int32_t;
};
template <class T>
using acc_t = typename accumulator<T>::type;

// The value that never wins a max (pooling's padding): the type's minimum, and the lowest
// finite value for floats, as onnxruntime (and the reference executor) pad.
template <class T>
inline T lowest() {
    if constexpr (std::is_integral<T>::value) {
        return std::numeric_limits<T>::min();
    } else if constexpr (std::is_same<T, float>::value) {
        return std::numeric_limits<float>::lowest();
    } else {
        return T(-65504.0f);  // half
    }
}

template <class T>
inline T infinity() {
    return T(std::numeric_limits<float>::infinity());
}

// The float output stage of conv / gemm: a fused activation on the bias-added accumulator.
// relu: lo = 0; relu6: lo = 0, hi = 6; clip(a, b): lo = a, hi = b; leaky relu: leaky with
// slope alpha (negative values are multiplied by it). Default: identity.
template <class T, class Acc = acc_t<T>>
struct Activation {
    using out_t = T;
    Acc lo = -infinity<Acc>();
    Acc hi = infinity<Acc>();
    bool leaky = false;
    Acc alpha = Acc(0);

    T apply(Acc value) const { return apply(value, 0); }
    T apply(Acc value, int) const {
        LL_INLINE();
        if (leaky && value < Acc(0)) value = value * alpha;
        value = value < lo ? lo : value;
        value = value > hi ? hi : value;
        return T(value);
    }
};

// The float division of average pooling: sum / n, with parameter index n - 1 (the integer
// stage's convention, see quant.h average_divide).
template <class T, class Acc = acc_t<T>>
struct Average {
    using out_t = T;

    T apply(Acc sum, int count_index) const { return T(sum / Acc(count_index + 1)); }
};

// Float element-wise add with a fused activation.
template <class T>
struct FloatAdd {
    using out_t = T;
    Activation<T, T> activation;

    T apply(T a, T b) const { return activation.apply(a + b, 0); }
};

// Copies a value (a float concat operand: nothing to rescale).
template <class T>
struct Copy {
    using out_t = T;

    T apply(T value) const { return value; }
};

// A type conversion (the ports of a half accelerator: float to half, rounding to nearest
// even, and half to float, exact).
template <class In, class Out>
struct Convert {
    using out_t = Out;

    Out apply(In value) const { return Out(value); }
};

// (x - z) in the accumulator type: the integer layers' centred operand, x itself for floats
// (z = 0, exact).
template <class Acc, class T>
inline Acc centred(T value, T zero_point) {
    return Acc(value) - Acc(zero_point);
}

}  // namespace layerloom
