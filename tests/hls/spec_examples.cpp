// The worked examples of docs/quantization.md (labels as there), checked in C++ against
// layerloom/quant.h, plus the portable shim's stream and ap_int. A plain executable:
//   g++ -std=c++17 -O2 -Wall -Wextra -Werror -I backends/hls/include tests/hls/spec_examples.cpp -o spec && ./spec
// prints "spec examples: N checks passed" and exits 0, or names the first failing check.
#include <cstdio>

#include "layerloom/layerloom.h"

using namespace layerloom;

namespace {

int checks = 0;
int failures = 0;

void check(const char* label, int64_t got, int64_t expected) {
    ++checks;
    if (got != expected) {
        ++failures;
        std::printf("FAIL %s: got %lld, expected %lld\n", label, static_cast<long long>(got),
                    static_cast<long long>(expected));
    }
}

template <Scheme S>
int64_t stage(int32_t acc, Requant r, int32_t zero_point = 0, int32_t lo = -128, int32_t hi = 127) {
    const OutputStage<S, int32_t> out = {{r}, zero_point, lo, hi};
    return out.apply(acc, 0);
}

template <Scheme S>
int64_t leaky_stage(int32_t acc, Requant r, Requant negative) {
    const OutputStage<S, int32_t> out = {{r}, 0, -128, 127, true, {negative}};
    return out.apply(acc, 0);
}

}  // namespace

int main() {
    // P1: pow2, s = 8
    const Requant p1 = {1, 8};
    check("P1 1000", stage<Scheme::pow2>(1000, p1), 4);
    check("P1 640 tie", stage<Scheme::pow2>(640, p1), 3);
    check("P1 -640 tie", stage<Scheme::pow2>(-640, p1), -2);
    check("P1 -641", stage<Scheme::pow2>(-641, p1), -3);
    check("P1 40000 saturates", stage<Scheme::pow2>(40000, p1), 127);
    check("P1 -1000 relu", stage<Scheme::pow2>(-1000, p1, 0, 0, 127), 0);
    // SRDHM examples (section 4)
    check("SRDHM(1, 2^30)", saturating_rounding_doubling_high_mul(1, 1 << 30), 1);
    check("SRDHM(-1, 2^30)", saturating_rounding_doubling_high_mul(-1, 1 << 30), 0);
    check("SRDHM(3, 2^30)", saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
    check("SRDHM(-3, 2^30)", saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
    check("SRDHM(min, min)", saturating_rounding_doubling_high_mul(kInt32Min, kInt32Min), kInt32Max);
    // F1: fixed, M = 0.002 -> (1099511628, 8), z_y = -5
    const Requant f1 = {1099511628, 8};
    check("F1 1000", stage<Scheme::fixed>(1000, f1, -5), -3);
    check("F1 -1000", stage<Scheme::fixed>(-1000, f1, -5), -7);
    check("F1 2250", stage<Scheme::fixed>(2250, f1, -5), 0);
    check("F1 100000", stage<Scheme::fixed>(100000, f1, -5), 127);
    // F2: ties, and a left shift
    check("F2 10", requantize_fixed(10, 1073741824, 1), 3);
    check("F2 -10", requantize_fixed(-10, 1073741824, 1), -3);
    check("F2 pow2 10", requantize_pow2(10, 1, 2), 3);
    check("F2 pow2 -10", requantize_pow2(-10, 1, 2), -2);
    check("F2 M=3", requantize_fixed(5, 1610612736, -2), 15);
    // L1: pow2 leaky, alpha 0.1 -> m = 6554, negative shift 24
    check("L1 -1000", leaky_stage<Scheme::pow2>(-1000, p1, {6554, 24}), 0);
    check("L1 -5000", leaky_stage<Scheme::pow2>(-5000, p1, {6554, 24}), -2);
    check("L1 1000", leaky_stage<Scheme::pow2>(1000, p1, {6554, 24}), 4);
    // L2: fixed leaky, M * alpha = 0.0002 -> (1759218604, 12)
    check("L2 -1000", leaky_stage<Scheme::fixed>(-1000, f1, {1759218604, 12}), 0);
    check("L2 -30000", leaky_stage<Scheme::fixed>(-30000, f1, {1759218604, 12}), -6);
    // A1: pow2 add, operand shifts (0, -2), output shift 1
    const AddStage<Scheme::pow2, int8_t> a1 = {0, 0, {1, 0}, {1, -2}, {{{1, 1}}, 0, -128, 127}};
    check("A1 37 + -9", a1.apply(int8_t(37), int8_t(-9)), 1);
    check("A1 100 + 20", a1.apply(int8_t(100), int8_t(20)), 90);
    // A2: fixed add
    const AddStage<Scheme::fixed, int8_t> a2 = {
        3, -5, {1717986918, -15}, {1073741824, -17}, {{{1342177280, 15}}, 2, -128, 127}};
    check("A2 53 + 15", a2.apply(int8_t(53), int8_t(15)), 52);
    check("A2 -100 + -60", a2.apply(int8_t(-100), int8_t(-60)), -118);
    check("A2 127 + 127", a2.apply(int8_t(127), int8_t(127)), 127);
    // C1: concat operand, pow2 shift 2
    const Rescale<Scheme::pow2, int8_t> c1 = {0, {{{1, 2}}, 0, -128, 127}};
    check("C1 -6", c1.apply(int8_t(-6)), -1);
    check("C1 37", c1.apply(int8_t(37)), 9);
    // V1: 3x3 average, n = 9 (parameter set 8)
    OutputStage<Scheme::pow2, int8_t, 9> v1_pow2 = {};
    v1_pow2.requant[8] = {58254, 19};
    v1_pow2.lo = -128;
    v1_pow2.hi = 127;
    check("V1 pow2 100", average_divide(100, 9, v1_pow2), 11);
    check("V1 pow2 -105", average_divide(-105, 9, v1_pow2), -12);
    OutputStage<Scheme::fixed, int8_t, 9> v1_fixed = {};
    v1_fixed.requant[8] = {1908874354, 3};
    v1_fixed.lo = -128;
    v1_fixed.hi = 127;
    check("V1 fixed 100", average_divide(100, 9, v1_fixed), 11);
    check("V1 fixed -105", average_divide(-105, 9, v1_fixed), -12);
    // V2: global 7x7, n = 49
    const OutputStage<Scheme::fixed, int8_t> v2 = {{{1402438301, 5}}, 0, -128, 127};
    check("V2 1000", average_divide(1000, 1, v2), 20);
    // Q1 / D1: the float boundary
    check("Q1 2.5", Quantize<int8_t>{1.0f, 10}.apply(2.5f), 12);
    check("Q1 3.5", Quantize<int8_t>{1.0f, 10}.apply(3.5f), 14);
    check("Q1 -2.5", Quantize<int8_t>{1.0f, 10}.apply(-2.5f), 8);
    check("Q1 1000", Quantize<int8_t>{1.0f, 10}.apply(1000.0f), 127);
    check("Q1 0.25 / 0.1", Quantize<int8_t>{0.1f, 0}.apply(0.25f), 2);
    check("Q1 uint8 -3", Quantize<uint8_t>{1.0f, 0}.apply(-3.0f), 0);
    check("D1", int64_t(Dequantize<int8_t>{0.5f, 3}.apply(int8_t(-7))), -5);

    // The shim (skipped under Vitis, whose types these are).
#ifndef LAYERLOOM_VITIS
    hls::stream<int32_t> fifo("fifo");
    fifo.write(1);
    fifo << 2;
    check("stream size", int64_t(fifo.size()), 2);
    int32_t second = 0;
    check("stream order", fifo.read(), 1);
    fifo >> second;
    check("stream >>", second, 2);
    check("stream empty", fifo.empty(), 1);
    check("stream read_nb on empty", fifo.read_nb(second), 0);
    bool threw = false;
    try {
        fifo.read();
    } catch (const std::underflow_error&) {
        threw = true;
    }
    check("stream read while empty throws", threw, 1);
    check("ap_int<8> wraps 200", ap_int<8>(200), -56);
    check("ap_int<5> wraps -17", ap_int<5>(-17), 15);
    check("ap_uint<4> wraps 19", int64_t(ap_uint<4>(19)), 3);
    check("ap_uint<8>(0xab).range(7, 4)", int64_t(ap_uint<8>(0xab).range(7, 4)), 0xa);
    check("ap_int<64> keeps", ap_int<64>(kInt32Min * int64_t(4)), kInt32Min * int64_t(4));
#endif

    if (failures) {
        std::fprintf(stderr, "spec examples: %d of %d checks failed\n", failures, checks);
        return 1;
    }
    std::printf("spec examples: %d checks passed\n", checks);
    return 0;
}
