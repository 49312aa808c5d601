// The integer rules of layerloom/quant.h over arrays, for the exhaustive comparison with
// compiler/quant/intmath.py (tests/test_hls_templates.py). Values travel as int64.
#include "harness.h"

using namespace layerloom;

extern "C" {

int ll_rounding_shift_right(const int64_t* v, const int64_t* s, int64_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = rounding_shift_right(v[i], int(s[i]));
    return 0;
}

int ll_requantize_pow2(const int64_t* x, const int64_t* m, const int64_t* s, int64_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = requantize_pow2(int32_t(x[i]), int32_t(m[i]), int32_t(s[i]));
    return 0;
}

int ll_srdhm(const int64_t* a, const int64_t* b, int64_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = saturating_rounding_doubling_high_mul(int32_t(a[i]), int32_t(b[i]));
    return 0;
}

int ll_rdbpot(const int64_t* x, const int64_t* e, int64_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = rounding_divide_by_pot(int32_t(x[i]), int(e[i]));
    return 0;
}

int ll_requantize_fixed(const int64_t* x, const int64_t* m, const int64_t* s, int64_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = requantize_fixed(int32_t(x[i]), int32_t(m[i]), int32_t(s[i]));
    return 0;
}

// The output stage with one parameter set per value (leaky when `leaky`), int8 or uint8 result.
int ll_output_stage(const int64_t* acc, const int64_t* params, int64_t* y, int64_t n, int64_t fixed,
                    int64_t leaky, int64_t zero_point, int64_t lo, int64_t hi) {
    for (int64_t i = 0; i < n; ++i) {
        const Requant requant = {int32_t(params[4 * i]), int32_t(params[4 * i + 1])};
        const Requant negative = {int32_t(params[4 * i + 2]), int32_t(params[4 * i + 3])};
        if (fixed) {
            OutputStage<Scheme::fixed, int32_t> stage = {{requant}, int32_t(zero_point), int32_t(lo), int32_t(hi),
                                                         leaky != 0, {negative}};
            y[i] = stage.apply(int32_t(acc[i]), 0);
        } else {
            OutputStage<Scheme::pow2, int32_t> stage = {{requant}, int32_t(zero_point), int32_t(lo), int32_t(hi),
                                                        leaky != 0, {negative}};
            y[i] = stage.apply(int32_t(acc[i]), 0);
        }
    }
    return 0;
}

int ll_round_half_even(const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = round_half_even(x[i]);
    return 0;
}

}  // extern "C"

// The shim's stream: a read from an empty stream is reported (status 1 + message), not garbage.
extern "C" int ll_read_from_empty_stream(int64_t values_written) {
    return harness::guarded([&] {
        hls::stream<int8_t> in("short");
        hls::stream<int8_t> out("out");
        for (int64_t i = 0; i < values_written; ++i) in.write(int8_t(i));
        layerloom::elementwise<3>(in, out, layerloom::Copy<int8_t>{});
    });
}
