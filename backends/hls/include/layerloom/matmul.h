// layerloom HLS library: matrix multiplication over a PE array (fully connected, pointwise
// convolution, and the GEMM half of an im2row convolution).
#pragma once

#include "numeric.h"
#include "shim.h"

namespace layerloom {

// Block matrix multiply of a stream of ROWS rows (K values each) by the weight matrix
// (N x K, one row per output): out[r][n] = stage(bias[n] + sum_k (x[r][k] - zx) * (w[n][k] - zw)).
// The N outputs are computed in blocks of PE: the PE accumulators of a block work in
// parallel (the unrolled PE loop; weights and bias partitioned cyclically by PE along N, so
// each PE owns its rows), and the K loop is pipelined with II=1. One row costs about
// K * N / PE + N cycles. Output: the N values of each row in order.
template <int ROWS, int K, int N, int PE, class T, class W, class Bias, class Stage>
void gemm_rows(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out, const W weights[N][K],
               const Bias bias[N], const Stage& stage, nondeduced<T> input_zero_point = T(0),
               nondeduced<W> weight_zero_point = W(0)) {
    static_assert(ROWS > 0 && K > 0 && N > 0, "gemm sizes must be positive");
    static_assert(PE > 0 && N % PE == 0, "PE must divide the number of outputs");
    using Acc = acc_t<T>;
    LL_PARTITION_CYCLIC(weights, PE, 1);
    LL_PARTITION_CYCLIC(bias, PE, 1);
    T row[K];
    for (int r = 0; r < ROWS; ++r) {
        for (int k = 0; k < K; ++k) {
            LL_PIPELINE();
            row[k] = in.read();
        }
        for (int block = 0; block < N / PE; ++block) {
            Acc acc[PE];
            LL_PARTITION_COMPLETE(acc, 1);
            for (int p = 0; p < PE; ++p) {
                LL_UNROLL();
                acc[p] = Acc(bias[block * PE + p]);
            }
            for (int k = 0; k < K; ++k) {
                LL_PIPELINE();
                const Acc x = centred<Acc>(row[k], T(input_zero_point));
                for (int p = 0; p < PE; ++p) {
                    LL_UNROLL();
                    acc[p] += x * centred<Acc>(weights[block * PE + p][k], W(weight_zero_point));
                }
            }
            for (int p = 0; p < PE; ++p) {
                LL_PIPELINE();
                out.write(stage.apply(acc[p], block * PE + p));
            }
        }
    }
}

// Fully connected layer (qnn.gemm with one row): K inputs in, N outputs out.
template <int K, int N, int PE, class T, class W, class Bias, class Stage>
void dense(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out, const W weights[N][K], const Bias bias[N],
           const Stage& stage, nondeduced<T> input_zero_point = T(0), nondeduced<W> weight_zero_point = W(0)) {
    gemm_rows<1, K, N, PE>(in, out, weights, bias, stage, input_zero_point, weight_zero_point);
}

// Pointwise (1x1, stride 1, unpadded) convolution of an HWC stream: one matrix-vector
// product per pixel. Weights: the OIHW tensor as an M x C matrix.
template <int C, int H, int W, int M, int PE, class T, class Wt, class Bias, class Stage>
void pointwise_conv2d(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out, const Wt weights[M][C],
                      const Bias bias[M], const Stage& stage, nondeduced<T> input_zero_point = T(0),
                      nondeduced<Wt> weight_zero_point = Wt(0)) {
    gemm_rows<H * W, C, M, PE>(in, out, weights, bias, stage, input_zero_point, weight_zero_point);
}

}  // namespace layerloom
