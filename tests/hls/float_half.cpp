// Float and half instantiations of the layer templates, and the half type itself
// (conversions and arithmetic). tests/test_hls_templates.py builds this file twice: with
// the compiler's _Float16 and with -DLAYERLOOM_SOFT_HALF (the struct of half.h), and checks
// that both give the same bits.
#include <cstring>

#include "cases.h"

using namespace shapes;
using layerloom::half;

// The same cases for both types: PREFIX_name.
#define LL_FLOAT_CASES(PREFIX, T)                                                                    \
    using PREFIX##_family = harness::FloatStage<T>;                                                  \
    LL_CONV_CASE(PREFIX##_conv_direct, direct, Same3x3, 8, 1, 4, T, T, T, PREFIX##_family);          \
    LL_CONV_CASE(PREFIX##_conv_grouped, direct, Odd, 6, 2, 3, T, T, T, PREFIX##_family);             \
    LL_CONV_CASE(PREFIX##_conv_im2row, im2row, Odd, 4, 1, 2, T, T, T, PREFIX##_family);              \
    LL_CONV_CASE(PREFIX##_depthwise, depthwise, Depthwise, 12, 1, 4, T, T, T, PREFIX##_family);      \
    LL_CONV_CASE(PREFIX##_pointwise, pointwise, Pixels, 16, 1, 4, T, T, T, PREFIX##_family);         \
    LL_CONV_CASE(PREFIX##_dense, dense, Vector, 10, 1, 5, T, T, T, PREFIX##_family);                 \
    LL_POOL_CASE(PREFIX##_max_pool, max, Ceil3x3, 2, false, T, PREFIX##_family);                     \
    LL_POOL_CASE(PREFIX##_avg_pool, avg, Ceil3x3, 4, false, T, PREFIX##_family);                     \
    LL_POOL_CASE(PREFIX##_avg_pool_include_pad, avg, Dilated, 3, true, T, PREFIX##_family);          \
    LL_POOL_CASE(PREFIX##_global_max, global_max, Whole, 1, false, T, PREFIX##_family);              \
    LL_POOL_CASE(PREFIX##_global_avg, global_avg, Whole, 1, false, T, PREFIX##_family);              \
    LL_ADD_CASE(PREFIX##_add, 97, T, T, PREFIX##_family);                                            \
    LL_CONCAT_CASE(PREFIX##_concat, 12, 3, 5, T, T, PREFIX##_family)

LL_FLOAT_CASES(f32, float);
LL_FLOAT_CASES(f16, half);

// A standalone float activation (an unfused relu6 / leaky relu): params [lo, hi, leaky, alpha].
extern "C" int f32_activation(const void* x, const void* params, void* y) {
    return harness::run_elementwise<100, float, layerloom::Activation<float>>(
        x, params, y, [](const void* p) { return harness::FloatStage<float>::make<1>(p); });
}

// The half type: binary16 bits in and out (uint16).
extern "C" int ll_half_from_float(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const half h = half(x[i]);
        std::memcpy(&y[i], &h, sizeof h);
    }
    return 0;
}

extern "C" int ll_float_from_half(const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        half h;
        std::memcpy(&h, &x[i], sizeof h);
        y[i] = float(h);
    }
    return 0;
}

// y[4 i .. 4 i + 3] = a + b, a - b, a * b, a / b.
extern "C" int ll_half_arithmetic(const half* a, const half* b, half* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        y[4 * i] = a[i] + b[i];
        y[4 * i + 1] = a[i] - b[i];
        y[4 * i + 2] = a[i] * b[i];
        y[4 * i + 3] = a[i] / b[i];
    }
    return 0;
}

extern "C" int ll_half_is_struct(void) {
#ifdef LAYERLOOM_HALF_IS_STRUCT
    return 1;
#else
    return 0;
#endif
}
