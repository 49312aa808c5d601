// The example top function: DDR weights loaded once per call into on-chip buffers (as a
// reused SEML engine does), then, per image, a DATAFLOW pipeline of three layer templates
// joined by streams (as SESL engines are).
#include "example_top.h"

namespace {

using namespace example;
using layerloom::Requant;
using layerloom::Scheme;
using ConvStage = layerloom::OutputStage<Scheme::pow2, int8_t>;
using DenseStage = layerloom::OutputStage<Scheme::pow2, int8_t>;

void network(hls::stream<int8_t>& input, hls::stream<int8_t>& output, const int8_t conv_w[CONV_M][CONV_K],
             const int32_t conv_b[CONV_M], const ConvStage& conv_stage, const int8_t dense_w[DENSE_N][DENSE_K],
             const int32_t dense_b[DENSE_N], const DenseStage& dense_stage) {
    LL_DATAFLOW();
    hls::stream<int8_t> conv_out("conv_out");
    hls::stream<int8_t> pool_out("pool_out");
    LL_STREAM_DEPTH(conv_out, 64);
    LL_STREAM_DEPTH(pool_out, 64);
    layerloom::conv2d<ConvWindow, CONV_M, CONV_PE>(input, conv_out, conv_w, conv_b, conv_stage);
    layerloom::max_pool2d<PoolWindow, 1>(conv_out, pool_out);
    layerloom::dense<DENSE_K, DENSE_N, DENSE_PE>(pool_out, output, dense_w, dense_b, dense_stage);
}

}  // namespace

void example_top(hls::stream<int8_t>& input, hls::stream<int8_t>& output, const int8_t* weights,
                 const int32_t* biases, int conv_shift, int dense_shift, int batch) {
    LL_INTERFACE(axis port=input);
    LL_INTERFACE(axis port=output);
    LL_INTERFACE(m_axi port=weights offset=slave bundle=gmem0 depth=676);
    LL_INTERFACE(m_axi port=biases offset=slave bundle=gmem1 depth=14);
    LL_INTERFACE(s_axilite port=conv_shift bundle=control);
    LL_INTERFACE(s_axilite port=dense_shift bundle=control);
    LL_INTERFACE(s_axilite port=batch bundle=control);
    LL_INTERFACE(s_axilite port=return bundle=control);
    static_assert(WEIGHT_WORDS == 676 && BIAS_WORDS == 14, "the m_axi depths above");

    int8_t conv_w[CONV_M][CONV_K];
    int8_t dense_w[DENSE_N][DENSE_K];
    int32_t conv_b[CONV_M];
    int32_t dense_b[DENSE_N];
    for (int i = 0; i < WEIGHT_WORDS; ++i) {  // burst read from DDR
        LL_PIPELINE();
        const int8_t w = weights[i];
        if (i < CONV_M * CONV_K) {
            conv_w[i / CONV_K][i % CONV_K] = w;
        } else {
            dense_w[(i - CONV_M * CONV_K) / DENSE_K][(i - CONV_M * CONV_K) % DENSE_K] = w;
        }
    }
    for (int i = 0; i < BIAS_WORDS; ++i) {
        LL_PIPELINE();
        if (i < CONV_M) {
            conv_b[i] = biases[i];
        } else {
            dense_b[i - CONV_M] = biases[i];
        }
    }
    const ConvStage conv_stage = {{Requant{1, conv_shift}}, 0, 0, 127};  // fused relu: clamp at 0
    const DenseStage dense_stage = {{Requant{1, dense_shift}}, 0, -128, 127};
    for (int image = 0; image < batch; ++image) {
        network(input, output, conv_w, conv_b, conv_stage, dense_w, dense_b, dense_stage);
    }
}
