// layerloom HLS library: 2-D convolutions on HWC streams.
//
// Weights are the ONNX OIHW tensor seen as a matrix with one row per output channel:
// weights[m][(c * KH + i) * KW + j] (c counted within the group). Bias: one per output
// channel (int32 for the integer layers, T for float / half). Padding holds the input
// zero point (real 0), so it adds nothing to the accumulator.
#pragma once

#include "matmul.h"
#include "numeric.h"
#include "shim.h"
#include "window.h"

namespace layerloom {

// Standard (and grouped) convolution, computed directly from the line buffer. For each
// output pixel, the M output channels are computed in blocks of PE in parallel (PE divides
// M / G); the reduction over the C/G * KH * KW taps is pipelined with II=1. A pixel costs
// about K * M / PE + M cycles.
template <class Win, int M, int PE, int G = 1, class T, class W, class Bias, class Stage>
void conv2d(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out,
            const W weights[M][Win::C / G * Win::KH * Win::KW], const Bias bias[M], const Stage& stage,
            nondeduced<T> input_zero_point = T(0), nondeduced<W> weight_zero_point = W(0)) {
    constexpr int CG = Win::C / G;
    constexpr int MG = M / G;
    constexpr int K = CG * Win::TAPS;
    static_assert(G > 0 && Win::C % G == 0 && M % G == 0, "groups must divide the input and output channels");
    static_assert(PE > 0 && MG % PE == 0, "PE must divide the output channels of a group");
    using Acc = acc_t<T>;
    LL_PARTITION_CYCLIC(weights, PE, 1);
    LL_PARTITION_CYCLIC(bias, PE, 1);
    T lines[Win::R][Win::WX][Win::C];
    for (int py = 0; py < Win::HX; ++py) {
        fill_line<Win>(lines, in, py, T(input_zero_point));
        int oy;
        if (!Win::completes_row(py, oy)) continue;
        int slots[Win::KH];
        window_slots<Win>(oy, slots);
        for (int ox = 0; ox < Win::OW; ++ox) {
            for (int block = 0; block < M / PE; ++block) {
                const int group_base = (block * PE) / MG * CG;  // first input channel of the block's group
                Acc acc[PE];
                LL_PARTITION_COMPLETE(acc, 1);
                for (int p = 0; p < PE; ++p) {
                    LL_UNROLL();
                    acc[p] = Acc(bias[block * PE + p]);
                }
                for (int k = 0; k < K; ++k) {
                    LL_PIPELINE();
                    const int c = k / Win::TAPS, i = (k / Win::KW) % Win::KH, j = k % Win::KW;
                    const T value = lines[slots[i]][ox * Win::SW + j * Win::DW][group_base + c];
                    const Acc x = centred<Acc>(value, T(input_zero_point));
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
}

// Depthwise convolution (group = C; M = C * multiplier, output channel m reads input
// channel m / multiplier). Weights: M x (KH * KW). PE output channels in parallel, each
// reading its own channel of the line buffer (partitioned cyclically by PE along C), the
// KH * KW taps pipelined: a pixel costs about KH * KW * M / PE + M cycles.
template <class Win, int M, int PE, class T, class W, class Bias, class Stage>
void depthwise_conv2d(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out,
                      const W weights[M][Win::KH * Win::KW], const Bias bias[M], const Stage& stage,
                      nondeduced<T> input_zero_point = T(0), nondeduced<W> weight_zero_point = W(0)) {
    constexpr int MULTIPLIER = M / Win::C;
    static_assert(M % Win::C == 0, "depthwise output channels must be a multiple of the input channels");
    static_assert(PE > 0 && M % PE == 0, "PE must divide the output channels");
    using Acc = acc_t<T>;
    LL_PARTITION_CYCLIC(weights, PE, 1);
    LL_PARTITION_CYCLIC(bias, PE, 1);
    T lines[Win::R][Win::WX][Win::C];
    LL_PARTITION_CYCLIC(lines, PE, 3);
    for (int py = 0; py < Win::HX; ++py) {
        fill_line<Win>(lines, in, py, T(input_zero_point));
        int oy;
        if (!Win::completes_row(py, oy)) continue;
        int slots[Win::KH];
        window_slots<Win>(oy, slots);
        for (int ox = 0; ox < Win::OW; ++ox) {
            for (int block = 0; block < M / PE; ++block) {
                Acc acc[PE];
                LL_PARTITION_COMPLETE(acc, 1);
                for (int p = 0; p < PE; ++p) {
                    LL_UNROLL();
                    acc[p] = Acc(bias[block * PE + p]);
                }
                for (int t = 0; t < Win::TAPS; ++t) {
                    LL_PIPELINE();
                    const int i = t / Win::KW, j = t % Win::KW;
                    for (int p = 0; p < PE; ++p) {
                        LL_UNROLL();
                        const int m = block * PE + p;
                        const T value = lines[slots[i]][ox * Win::SW + j * Win::DW][m / MULTIPLIER];
                        acc[p] += centred<Acc>(value, T(input_zero_point)) *
                                  centred<Acc>(weights[m][t], W(weight_zero_point));
                    }
                }
                for (int p = 0; p < PE; ++p) {
                    LL_PIPELINE();
                    out.write(stage.apply(acc[p], block * PE + p));
                }
            }
        }
    }
}

// im2row: for every output pixel, the K = C * KH * KW values under its window, in the
// weights' (c, i, j) order; padding is `pad` (the input zero point). The rows stream is
// the left matrix of the convolution as a GEMM (OH * OW x K).
template <class Win, class T>
void im2row(hls::stream<T>& in, hls::stream<T>& rows, nondeduced<T> pad) {
    T lines[Win::R][Win::WX][Win::C];
    for (int py = 0; py < Win::HX; ++py) {
        fill_line<Win>(lines, in, py, T(pad));
        int oy;
        if (!Win::completes_row(py, oy)) continue;
        int slots[Win::KH];
        window_slots<Win>(oy, slots);
        for (int ox = 0; ox < Win::OW; ++ox) {
            for (int k = 0; k < Win::C * Win::TAPS; ++k) {
                LL_PIPELINE();
                const int c = k / Win::TAPS, i = (k / Win::KW) % Win::KH, j = k % Win::KW;
                rows.write(lines[slots[i]][ox * Win::SW + j * Win::DW][c]);
            }
        }
    }
}

// Convolution as im2row + block matrix multiply over the PE array (as STANN does): a
// DATAFLOW region of two processes joined by a stream, so that the window extraction of
// one pixel overlaps the GEMM of the previous one. Same result as conv2d (group 1).
template <class Win, int M, int PE, class T, class W, class Bias, class Stage>
void conv2d_im2row(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out,
                   const W weights[M][Win::C * Win::KH * Win::KW], const Bias bias[M], const Stage& stage,
                   nondeduced<T> input_zero_point = T(0), nondeduced<W> weight_zero_point = W(0)) {
    LL_DATAFLOW();
    constexpr int K = Win::C * Win::TAPS;
    hls::stream<T> rows("im2row_rows");
    LL_STREAM_DEPTH(rows, K);
    im2row<Win>(in, rows, input_zero_point);
    gemm_rows<Win::OH * Win::OW, K, M, PE>(rows, out, weights, bias, stage, input_zero_point, weight_zero_point);
}

}  // namespace layerloom
