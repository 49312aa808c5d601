// Integer pooling and element-wise templates, compared bit for bit with intmath.py by
// tests/test_hls_templates.py.
#include "cases.h"

using layerloom::Scheme;
using namespace shapes;
using Pow2 = harness::IntStage<Scheme::pow2, int8_t>;
using Fixed = harness::IntStage<Scheme::fixed, int8_t>;
using FixedU8 = harness::IntStage<Scheme::fixed, uint8_t>;

LL_POOL_CASE(max_ceil_i8, max, Ceil3x3, 2, false, int8_t, Pow2);
LL_POOL_CASE(max_2x2_u8, max, Half2x2, 6, false, uint8_t, FixedU8);
LL_POOL_CASE(max_dilated_i8, max, Dilated, 1, false, int8_t, Fixed);
LL_POOL_CASE(avg_ceil_exclude_pad_pow2, avg, Ceil3x3, 4, false, int8_t, Pow2);
LL_POOL_CASE(avg_ceil_include_pad_fixed, avg, Ceil3x3, 2, true, int8_t, Fixed);
LL_POOL_CASE(avg_2x2_u8_fixed, avg, Half2x2, 3, false, uint8_t, FixedU8);
LL_POOL_CASE(avg_dilated_include_pad_pow2, avg, Dilated, 3, true, int8_t, Pow2);
LL_POOL_CASE(global_max_i8, global_max, Whole, 1, false, int8_t, Fixed);
LL_POOL_CASE(global_avg_pow2, global_avg, Whole, 1, false, int8_t, Pow2);
LL_POOL_CASE(global_avg_u8_fixed, global_avg, Whole, 1, false, uint8_t, FixedU8);

LL_ADD_CASE(add_pow2, 97, int8_t, int8_t, Pow2);
LL_ADD_CASE(add_fixed, 97, int8_t, int8_t, Fixed);
LL_ADD_CASE(add_fixed_u8, 97, uint8_t, int8_t, FixedU8);
LL_CONCAT_CASE(concat_pow2, 12, 3, 5, int8_t, int8_t, Pow2);
LL_CONCAT_CASE(concat_fixed_u8, 12, 4, 2, uint8_t, int8_t, FixedU8);

// qnn.requantize (from int8 and from int32 accumulators), qnn.lut, quantize, dequantize.
template <class In, class Family>
int requantize_case(const void* x, const void* params, void* y) {
    return harness::guarded([&] {
        const auto rescale = Family::make_rescale(params, 0);
        hls::stream<In> in("in");
        hls::stream<typename decltype(rescale)::out_t> out("out");
        harness::push(in, x, 300);
        layerloom::requantize<300>(in, out, rescale);
        harness::expect_drained(in);
        harness::pop(out, y, 300);
    });
}
extern "C" int requantize_i8_to_u8_fixed(const void* x, const void* p, void* y) {
    return requantize_case<int8_t, FixedU8>(x, p, y);
}
extern "C" int requantize_i32_to_i8_pow2(const void* x, const void* p, void* y) {
    return requantize_case<int32_t, Pow2>(x, p, y);
}
extern "C" int requantize_i32_to_i8_fixed(const void* x, const void* p, void* y) {
    return requantize_case<int32_t, Fixed>(x, p, y);
}

template <class In, class Out>
int lookup_case(const void* x, const void* table, void* y) {
    return harness::run_elementwise<300, In, layerloom::Lookup<In, Out>>(x, table, y, [](const void* t) {
        layerloom::Lookup<In, Out> stage;
        for (int i = 0; i < 256; ++i) stage.table[i] = static_cast<const Out*>(t)[i];
        return stage;
    });
}
extern "C" int lookup_i8(const void* x, const void* table, void* y) { return lookup_case<int8_t, int8_t>(x, table, y); }
extern "C" int lookup_u8_to_i8(const void* x, const void* table, void* y) {
    return lookup_case<uint8_t, int8_t>(x, table, y);
}

// params (double): [scale, zero point]
template <class Out>
int quantize_case(const void* x, const void* params, void* y) {
    return harness::run_elementwise<300, float, layerloom::Quantize<Out>>(x, params, y, [](const void* p) {
        const double* d = static_cast<const double*>(p);
        return layerloom::Quantize<Out>{float(d[0]), int32_t(d[1])};
    });
}
extern "C" int quantize_i8(const void* x, const void* p, void* y) { return quantize_case<int8_t>(x, p, y); }
extern "C" int quantize_u8(const void* x, const void* p, void* y) { return quantize_case<uint8_t>(x, p, y); }

extern "C" int dequantize_i8(const void* x, const void* params, void* y) {
    return harness::run_elementwise<300, int8_t, layerloom::Dequantize<int8_t>>(x, params, y, [](const void* p) {
        const double* d = static_cast<const double*>(p);
        return layerloom::Dequantize<int8_t>{float(d[0]), int32_t(d[1])};
    });
}
