// layerloom HLS library: sliding windows over a feature-map stream.
//
// Streams carry one value per beat, pixels in row-major order with the channels of a
// pixel consecutive (HWC: index (y * W + x) * C + c). A window layer (conv, pooling,
// im2row) keeps the last R padded rows in a line buffer, R = DH * (KH - 1) + 1, filled
// one row at a time; as soon as the bottom row of a window row has arrived, that output
// row is computed from the buffer.
#pragma once

#include "shim.h"

namespace layerloom {

// Output length of one axis, as dialects/nn.py's window_output_size (ONNX / PyTorch).
constexpr int window_output_size(int size, int kernel, int stride, int pad_begin, int pad_end, int dilation,
                                 bool ceil_mode) {
    const int span = size + pad_begin + pad_end - (dilation * (kernel - 1) + 1);
    if (!ceil_mode) return span / stride + 1;
    const int out = (span + stride - 1) / stride + 1;
    return (out - 1) * stride >= size + pad_begin ? out - 1 : out;  // last window starts inside
}

constexpr int max_of(int a, int b) { return a > b ? a : b; }

// The geometry of a 2-D window over a C x H x W input: kernel KH x KW, strides, pads
// (top, left, bottom, right), dilations, ceil mode (pooling).
template <int C_, int H_, int W_, int KH_, int KW_, int SH_ = 1, int SW_ = 1, int PT_ = 0, int PL_ = 0,
          int PB_ = 0, int PR_ = 0, int DH_ = 1, int DW_ = 1, bool CEIL_ = false>
struct Window {
    static constexpr int C = C_, H = H_, W = W_, KH = KH_, KW = KW_, SH = SH_, SW = SW_;
    static constexpr int PT = PT_, PL = PL_, PB = PB_, PR = PR_, DH = DH_, DW = DW_;
    static constexpr bool CEIL = CEIL_;
    static constexpr int OH = window_output_size(H, KH, SH, PT, PB, DH, CEIL);
    static constexpr int OW = window_output_size(W, KW, SW, PL, PR, DW, CEIL);
    static constexpr int R = DH * (KH - 1) + 1;  // rows a window spans
    static constexpr int SPAN_W = DW * (KW - 1) + 1;
    // Padded extents, including the rows / columns past the end that ceil mode reads.
    static constexpr int HX = max_of(H + PT + PB, (OH - 1) * SH + R);
    static constexpr int WX = max_of(W + PL + PR, (OW - 1) * SW + SPAN_W);
    static constexpr int TAPS = KH * KW;
    static_assert(C > 0 && H > 0 && W > 0 && KH > 0 && KW > 0 && SH > 0 && SW > 0 && DH > 0 && DW > 0,
                  "window sizes, strides and dilations must be positive");
    static_assert(PT >= 0 && PL >= 0 && PB >= 0 && PR >= 0, "pads must be non-negative");
    static_assert(OH > 0 && OW > 0, "the window does not fit the padded input");

    // Whether padded row `py` completes the window of an output row, and which one.
    static bool completes_row(int py, int& oy) {
        const int top = py - (R - 1);
        if (top < 0 || top % SH != 0 || top / SH >= OH) return false;
        oy = top / SH;
        return true;
    }
    // Taps of output position `o` on an axis that fall in [-lo, size + hi) (>= 1): the
    // divisor of average pooling (lo, hi = the pads with count_include_pad, else 0).
    static int taps_inside(int o, int stride, int pad_begin, int kernel, int dilation, int size, int lo, int hi) {
        int count = 0;
        for (int k = 0; k < kernel; ++k) {
            const int at = o * stride - pad_begin + k * dilation;
            count += (at >= -lo && at < size + hi) ? 1 : 0;
        }
        return count > 0 ? count : 1;
    }
};

// Read padded row `py` of the input into its slot of the line buffer: values inside the
// input come from the stream, the padding (and ceil mode's extra border) is `pad`.
template <class Win, class T>
void fill_line(T lines[Win::R][Win::WX][Win::C], hls::stream<T>& in, int py, T pad) {
    const int slot = py % Win::R;
    const bool row_inside = py >= Win::PT && py < Win::PT + Win::H;
    for (int px = 0; px < Win::WX; ++px) {
        for (int c = 0; c < Win::C; ++c) {
            LL_PIPELINE();
            const bool inside = row_inside && px >= Win::PL && px < Win::PL + Win::W;
            lines[slot][px][c] = inside ? in.read() : pad;
        }
    }
}

// The line-buffer slots of the KH kernel rows of output row `oy`.
template <class Win>
void window_slots(int oy, int slots[Win::KH]) {
    for (int i = 0; i < Win::KH; ++i) {
        LL_UNROLL();
        slots[i] = (oy * Win::SH + i * Win::DH) % Win::R;
    }
}

}  // namespace layerloom
