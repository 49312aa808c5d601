// layerloom HLS library: pooling on HWC streams.
//
// Integer layers follow docs/quantization.md section 7: max pooling on the integers
// (padding never wins: the type's minimum, the lowest finite value for floats); average pooling
// sums (q - z_x) exactly in int32 and divides with the stage's parameter set n - 1, n being
// the window's count (ONNX: the kernel size with count_include_pad, else the taps inside
// the input; ceil mode's extra border never counts). Float / half layers divide with
// Average (sum / n).
#pragma once

#include "numeric.h"
#include "shim.h"
#include "window.h"

namespace layerloom {

// Max pooling: PE channels in parallel (the line buffer partitioned cyclically by PE along
// C), the KH * KW taps pipelined.
template <class Win, int PE, class T>
void max_pool2d(hls::stream<T>& in, hls::stream<T>& out) {
    static_assert(PE > 0 && Win::C % PE == 0, "PE must divide the channels");
    T lines[Win::R][Win::WX][Win::C];
    LL_PARTITION_CYCLIC(lines, PE, 3);
    for (int py = 0; py < Win::HX; ++py) {
        fill_line<Win>(lines, in, py, lowest<T>());
        int oy;
        if (!Win::completes_row(py, oy)) continue;
        int slots[Win::KH];
        window_slots<Win>(oy, slots);
        for (int ox = 0; ox < Win::OW; ++ox) {
            for (int block = 0; block < Win::C / PE; ++block) {
                T best[PE];
                LL_PARTITION_COMPLETE(best, 1);
                for (int p = 0; p < PE; ++p) {
                    LL_UNROLL();
                    best[p] = lowest<T>();
                }
                for (int t = 0; t < Win::TAPS; ++t) {
                    LL_PIPELINE();
                    const int i = t / Win::KW, j = t % Win::KW;
                    for (int p = 0; p < PE; ++p) {
                        LL_UNROLL();
                        const T value = lines[slots[i]][ox * Win::SW + j * Win::DW][block * PE + p];
                        best[p] = value > best[p] ? value : best[p];
                    }
                }
                for (int p = 0; p < PE; ++p) {
                    LL_PIPELINE();
                    out.write(best[p]);
                }
            }
        }
    }
}

// Average pooling. Integer stage: OutputStage<S, Out, KH * KW> (one parameter set per
// count); float: Average<T>.
template <class Win, int PE, bool COUNT_INCLUDE_PAD, class T, class Stage>
void avg_pool2d(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out, const Stage& stage,
                nondeduced<T> input_zero_point = T(0)) {
    static_assert(PE > 0 && Win::C % PE == 0, "PE must divide the channels");
    using Acc = acc_t<T>;
    constexpr int LO_H = COUNT_INCLUDE_PAD ? Win::PT : 0, HI_H = COUNT_INCLUDE_PAD ? Win::PB : 0;
    constexpr int LO_W = COUNT_INCLUDE_PAD ? Win::PL : 0, HI_W = COUNT_INCLUDE_PAD ? Win::PR : 0;
    T lines[Win::R][Win::WX][Win::C];
    LL_PARTITION_CYCLIC(lines, PE, 3);
    for (int py = 0; py < Win::HX; ++py) {
        fill_line<Win>(lines, in, py, T(input_zero_point));
        int oy;
        if (!Win::completes_row(py, oy)) continue;
        int slots[Win::KH];
        window_slots<Win>(oy, slots);
        const int count_h = Win::taps_inside(oy, Win::SH, Win::PT, Win::KH, Win::DH, Win::H, LO_H, HI_H);
        for (int ox = 0; ox < Win::OW; ++ox) {
            const int count = count_h * Win::taps_inside(ox, Win::SW, Win::PL, Win::KW, Win::DW, Win::W, LO_W, HI_W);
            for (int block = 0; block < Win::C / PE; ++block) {
                Acc sum[PE];
                LL_PARTITION_COMPLETE(sum, 1);
                for (int p = 0; p < PE; ++p) {
                    LL_UNROLL();
                    sum[p] = Acc(0);
                }
                for (int t = 0; t < Win::TAPS; ++t) {
                    LL_PIPELINE();
                    const int i = t / Win::KW, j = t % Win::KW;
                    for (int p = 0; p < PE; ++p) {
                        LL_UNROLL();
                        const T value = lines[slots[i]][ox * Win::SW + j * Win::DW][block * PE + p];
                        sum[p] += centred<Acc>(value, T(input_zero_point));
                    }
                }
                for (int p = 0; p < PE; ++p) {
                    LL_PIPELINE();
                    out.write(stage.apply(sum[p], count - 1));
                }
            }
        }
    }
}

// Global max pooling: C x H x W in, C out (one running maximum per channel).
template <int C, int H, int W, class T>
void global_max_pool(hls::stream<T>& in, hls::stream<T>& out) {
    T best[C];
    for (int c = 0; c < C; ++c) {
        LL_PIPELINE();
        best[c] = lowest<T>();
    }
    for (int i = 0; i < H * W * C; ++i) {
        LL_PIPELINE();
        const int c = i % C;
        const T value = in.read();
        best[c] = value > best[c] ? value : best[c];
    }
    for (int c = 0; c < C; ++c) {
        LL_PIPELINE();
        out.write(best[c]);
    }
}

// Global average pooling: n = H * W. Integer stage: OutputStage<S, Out, 1>; float: Average<T>.
template <int C, int H, int W, class T, class Stage>
void global_avg_pool(hls::stream<T>& in, hls::stream<typename Stage::out_t>& out, const Stage& stage,
                     nondeduced<T> input_zero_point = T(0)) {
    using Acc = acc_t<T>;
    Acc sum[C];
    for (int c = 0; c < C; ++c) {
        LL_PIPELINE();
        sum[c] = Acc(0);
    }
    for (int i = 0; i < H * W * C; ++i) {
        LL_PIPELINE();
        const int c = i % C;
        sum[c] += centred<Acc>(in.read(), T(input_zero_point));
    }
    for (int c = 0; c < C; ++c) {
        LL_PIPELINE();
        out.write(stage.apply(sum[c], H * W - 1));
    }
}

}  // namespace layerloom
