// Integer convolution / matmul templates, one case per interesting geometry, compared bit
// for bit with intmath.py by tests/test_hls_templates.py.
#include "cases.h"

using layerloom::Scheme;
using namespace shapes;
using Pow2 = harness::IntStage<Scheme::pow2, int8_t>;
using Fixed = harness::IntStage<Scheme::fixed, int8_t>;
using FixedU8 = harness::IntStage<Scheme::fixed, uint8_t>;

// The geometries are those of cases.h (namespace shapes).
LL_CONV_CASE(conv_direct_pow2, direct, Same3x3, 8, 1, 4, int8_t, int8_t, int32_t, Pow2);
LL_CONV_CASE(conv_direct_fixed, direct, Same3x3, 8, 1, 8, int8_t, int8_t, int32_t, Fixed);
LL_CONV_CASE(conv_im2row_pow2, im2row, Same3x3, 8, 1, 2, int8_t, int8_t, int32_t, Pow2);
LL_CONV_CASE(conv_im2row_fixed, im2row, Same3x3, 8, 1, 1, int8_t, int8_t, int32_t, Fixed);

// Odd geometry with uint8 activations, grouped.
LL_CONV_CASE(conv_direct_grouped_u8, direct, Odd, 6, 2, 3, uint8_t, int8_t, int32_t, FixedU8);
LL_CONV_CASE(conv_im2row_odd_pow2, im2row, Odd, 4, 1, 2, int8_t, int8_t, int32_t, Pow2);
// uint8 weights with a weight zero point (ONNX QLinearConv's uint8 form).
LL_CONV_CASE(conv_direct_u8_weights, direct, Odd, 4, 1, 4, uint8_t, uint8_t, int32_t, FixedU8);

LL_CONV_CASE(conv_direct_1x1_stride2, direct, Strided1x1, 4, 1, 2, int8_t, int8_t, int32_t, Fixed);

// A long reduction, run with extreme values.
LL_CONV_CASE(conv_direct_deep, direct, Deep, 4, 1, 4, int8_t, int8_t, int32_t, Fixed);

// Depthwise, multiplier 1 and 2.
LL_CONV_CASE(depthwise_fixed, depthwise, Depthwise, 6, 1, 3, int8_t, int8_t, int32_t, Fixed);
LL_CONV_CASE(depthwise_multiplier2_pow2, depthwise, Depthwise, 12, 1, 4, int8_t, int8_t, int32_t, Pow2);

// Pointwise and fully connected.
LL_CONV_CASE(pointwise_fixed, pointwise, Pixels, 16, 1, 4, int8_t, int8_t, int32_t, Fixed);
LL_CONV_CASE(pointwise_pow2_pe1, pointwise, Pixels, 16, 1, 1, uint8_t, int8_t, int32_t, Pow2);
LL_CONV_CASE(dense_fixed, dense, Vector, 10, 1, 5, int8_t, int8_t, int32_t, Fixed);
LL_CONV_CASE(dense_pow2, dense, Vector, 10, 1, 10, int8_t, int8_t, int32_t, Pow2);
