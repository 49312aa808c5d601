// A small example accelerator top function (tests/hls/example_top.cpp): the shape of what
// lower-to-hls generates, written by hand. 8x8x1 int8 image -> conv 3x3 (4 channels, pad 1,
// relu) -> max pool 2x2 -> dense (64 -> 10), pow2 requantization.
#pragma once

#include <cstdint>

#include "layerloom/layerloom.h"

namespace example {

using ConvWindow = layerloom::Window<1, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1>;
using PoolWindow = layerloom::Window<4, 8, 8, 2, 2, 2, 2>;
constexpr int CONV_M = 4, CONV_K = 9, DENSE_K = 4 * 4 * 4, DENSE_N = 10;
constexpr int CONV_PE = 2, DENSE_PE = 5;
constexpr int IMAGE = 8 * 8;
// The DDR images: the conv weights (M x K, OIHW order) then the dense weights (N x K, the
// pooled HWC order); the conv biases then the dense biases.
constexpr int WEIGHT_WORDS = CONV_M * CONV_K + DENSE_N * DENSE_K;
constexpr int BIAS_WORDS = CONV_M + DENSE_N;

}  // namespace example

// Axis streams in and out; weights and biases in DDR (m_axi); the two requantization shifts
// and the batch size through the AXI-lite control registers.
void example_top(hls::stream<int8_t>& input, hls::stream<int8_t>& output, const int8_t* weights,
                 const int32_t* biases, int conv_shift, int dense_shift, int batch);
