// layerloom HLS library: reused (SEML) engines with run-time shapes.
//
// The layer templates of conv.h / pool.h have compile-time shapes: one instance per layer,
// as a streaming pipeline (SESL) needs. A reused engine runs many layers of different
// shapes, so its loops take their trip counts from a run-time descriptor, a `Step`, and
// its buffers are sized by compile-time maxima (the largest of its layers).
//
// Feature maps live in an on-chip arena of slots, `T fmaps[SLOTS][SLOT]`, in HWC order
// (the value of (c, y, x) at (y * W + x) * C + c); a step reads the slots `in0` (and `in1`)
// and writes the slot `out`, never one it reads. Consecutive layers alternate between two
// slots: ping-pong buffers. Weights and parameters come from DDR (m_axi) at the step's
// offsets and are burst-read into the engine's local buffers before the layer runs:
//
//   conv: int8 weights M x (C/G * KH * KW) (the OIHW tensor, one row per output channel);
//         int32 parameters: bias[M], multiplier[M], shift[M], negative multiplier[M],
//         negative shift[M] (the leaky-relu set; zeros when unused)
//   avg pool: int32 multiplier[S], shift[S], set i for the window count first_count + i
//
// Integer semantics are those of docs/quantization.md, through quant.h's stages: the
// results are bit-identical to the compile-time templates and to the qnn reference.
#pragma once

#include <cstdint>

#include "numeric.h"
#include "quant.h"
#include "shim.h"

namespace layerloom {
namespace seml {

enum StepKind : int32_t { kConv = 0, kPool = 1, kAdd = 2 };

// The fields of a step, in order (backends/hls/emit.py writes steps positionally in this
// order; a test checks that it reads this list).
#define LAYERLOOM_SEML_STEP_FIELDS(X)                                                                \
    X(kind) X(in0) X(in1) X(out) X(weights_offset) X(params_offset)                                  \
    X(C) X(H) X(W) X(M) X(KH) X(KW) X(SH) X(SW) X(PT) X(PL) X(PB) X(PR) X(DH) X(DW) X(G) X(OH) X(OW) \
    X(zx) X(zw) X(zy) X(lo) X(hi) X(leaky) X(avg) X(count_include_pad) X(first_count)               \
    X(N) X(za) X(zb) X(ma) X(sa) X(mb) X(sb) X(m) X(s)

// One layer on a reused engine. conv: C x H x W in, M x OH x OW out, kernel KH x KW,
// strides, pads (top, left, bottom, right), dilations, G groups, zero points of input,
// weights and output, clamp [lo, hi], leaky. pool: the same window fields; avg (else max),
// count_include_pad, first_count (the window count of parameter set 0). add: N values,
// the operands' zero points and requantizations (ma, sa), (mb, sb) to the common scale,
// then (m, s) to the output.
struct Step {
#define LAYERLOOM_STEP_FIELD(name) int32_t name;
    LAYERLOOM_SEML_STEP_FIELDS(LAYERLOOM_STEP_FIELD)
#undef LAYERLOOM_STEP_FIELD
};

// Taps of output position `o` on one axis that fall in [-lo, size + hi): the window count
// of average pooling (lo, hi: the pads with count_include_pad, else 0), at least 1.
inline int taps_inside(int o, int stride, int pad_begin, int kernel, int dilation, int size, int lo, int hi) {
    int count = 0;
    for (int k = 0; k < kernel; ++k) {
        const int at = o * stride - pad_begin + k * dilation;
        count += (at >= -lo && at < size + hi) ? 1 : 0;
    }
    return count > 0 ? count : 1;
}

// Convolution (standard, grouped, depthwise, pointwise; a dense layer is a 1 x 1 map with
// a 1 x 1 kernel): for every output pixel, the M outputs in blocks of PE (the PE loop
// unrolled, the weights partitioned by PE along M), the reduction over K = C/G * KH * KW
// pipelined (II=1). A layer costs about M * K (weights) + OH * OW * (ceil(M / PE) * K + M)
// cycles. PE need not divide M: the last block masks the missing channels.
template <Scheme S, int PE, int SLOT, int MAX_M, int MAX_K, class T>
void conv_engine(const Step& d, T fmaps[][SLOT], const int8_t* ddr_weights, const int32_t* ddr_params) {
    static_assert(PE > 0 && MAX_M > 0 && MAX_K > 0, "engine sizes must be positive");
    // The engine's own memories: static, so they are zero at reset and never initialized
    // at run time; each layer fills what it uses.
    static int8_t weights[MAX_M][MAX_K];
    static int32_t bias[MAX_M];
    static Requant requant[MAX_M];
    static Requant negative[MAX_M];
    LL_PARTITION_CYCLIC(weights, PE, 1);
    LL_PARTITION_CYCLIC(bias, PE, 1);
    LL_PARTITION_CYCLIC(requant, PE, 1);
    LL_PARTITION_CYCLIC(negative, PE, 1);
    const int K = d.C / d.G * d.KH * d.KW;
    const int CG = d.C / d.G, MG = d.M / d.G, TAPS = d.KH * d.KW;
    for (int i = 0; i < d.M * K; ++i) {  // burst read of the layer's weights
        LL_PIPELINE();
        weights[i / K][i % K] = ddr_weights[d.weights_offset + i];
    }
    const int32_t* p = ddr_params + d.params_offset;
    for (int m = 0; m < d.M; ++m) {
        LL_PIPELINE();
        bias[m] = p[m];
        requant[m] = Requant{p[d.M + m], p[2 * d.M + m]};
        negative[m] = Requant{p[3 * d.M + m], p[4 * d.M + m]};
    }
    const T zx = T(d.zx);
    const int8_t zw = int8_t(d.zw);
    for (int oy = 0; oy < d.OH; ++oy) {
        for (int ox = 0; ox < d.OW; ++ox) {
            for (int block = 0; block * PE < d.M; ++block) {
                int32_t acc[PE];
                LL_PARTITION_COMPLETE(acc, 1);
                for (int q = 0; q < PE; ++q) {
                    LL_UNROLL();
                    const int m = block * PE + q;
                    acc[q] = m < d.M ? bias[m] : 0;
                }
                for (int k = 0; k < K; ++k) {
                    LL_PIPELINE();
                    const int c = k / TAPS, i = (k / d.KW) % d.KH, j = k % d.KW;
                    const int iy = oy * d.SH - d.PT + i * d.DH, ix = ox * d.SW - d.PL + j * d.DW;
                    const bool inside = iy >= 0 && iy < d.H && ix >= 0 && ix < d.W;
                    for (int q = 0; q < PE; ++q) {
                        LL_UNROLL();
                        const int m = block * PE + q;
                        if (m < d.M) {
                            const int channel = m / MG * CG + c;  // the input channel of m's group
                            const T x = inside ? fmaps[d.in0][(iy * d.W + ix) * d.C + channel] : zx;
                            acc[q] += centred<int32_t>(x, zx) * centred<int32_t>(weights[m][k], zw);
                        }
                    }
                }
                for (int q = 0; q < PE && block * PE + q < d.M; ++q) {  // the block's channels only
                    LL_PIPELINE();
                    const int m = block * PE + q;
                    {
                        const OutputStage<S, T, 1> stage = {{requant[m]}, d.zy, d.lo, d.hi, d.leaky != 0, {negative[m]}};
                        fmaps[d.out][(oy * d.OW + ox) * d.M + m] = stage.apply(acc[q], 0);
                    }
                }
            }
        }
    }
}

// Max or average pooling (global pooling: the window is the whole map): PE channels in
// parallel, the taps pipelined. Padding never wins a max and adds nothing to a sum;
// average pooling divides with the parameter set of the window's count (spec section 7).
// A layer costs about OH * OW * (ceil(C / PE) * KH * KW + C) cycles.
template <Scheme S, int PE, int SLOT, int MAX_SETS, class T>
void pool_engine(const Step& d, T fmaps[][SLOT], const int32_t* ddr_params) {
    static_assert(PE > 0 && MAX_SETS > 0, "engine sizes must be positive");
    static Requant sets[MAX_SETS];  // the engine's memory (max pooling reads none)
    const int count_sets = d.avg ? d.KH * d.KW - d.first_count + 1 : 0;
    for (int i = 0; i < count_sets; ++i) {
        LL_PIPELINE();
        sets[i] = Requant{ddr_params[d.params_offset + i], ddr_params[d.params_offset + count_sets + i]};
    }
    const int lo_h = d.count_include_pad ? d.PT : 0, hi_h = d.count_include_pad ? d.PB : 0;
    const int lo_w = d.count_include_pad ? d.PL : 0, hi_w = d.count_include_pad ? d.PR : 0;
    const T zx = T(d.zx);
    for (int oy = 0; oy < d.OH; ++oy) {
        for (int ox = 0; ox < d.OW; ++ox) {
            const int count = taps_inside(oy, d.SH, d.PT, d.KH, d.DH, d.H, lo_h, hi_h) *
                              taps_inside(ox, d.SW, d.PL, d.KW, d.DW, d.W, lo_w, hi_w);
            for (int block = 0; block * PE < d.C; ++block) {
                int32_t value[PE];
                LL_PARTITION_COMPLETE(value, 1);
                for (int q = 0; q < PE; ++q) {
                    LL_UNROLL();
                    value[q] = d.avg ? 0 : int32_t(lowest<T>());
                }
                for (int t = 0; t < d.KH * d.KW; ++t) {
                    LL_PIPELINE();
                    const int iy = oy * d.SH - d.PT + t / d.KW * d.DH, ix = ox * d.SW - d.PL + t % d.KW * d.DW;
                    if (iy < 0 || iy >= d.H || ix < 0 || ix >= d.W) continue;
                    for (int q = 0; q < PE; ++q) {
                        LL_UNROLL();
                        const int c = block * PE + q;
                        if (c < d.C) {
                            const T x = fmaps[d.in0][(iy * d.W + ix) * d.C + c];
                            value[q] = d.avg ? value[q] + centred<int32_t>(x, zx) : (int32_t(x) > value[q] ? int32_t(x) : value[q]);
                        }
                    }
                }
                for (int q = 0; q < PE && block * PE + q < d.C; ++q) {  // the block's channels only
                    LL_PIPELINE();
                    const int c = block * PE + q;
                    {
                        T y = T(value[q]);
                        if (d.avg) {
                            const OutputStage<S, T, 1> stage = {{sets[count - d.first_count]}, d.zy, d.lo, d.hi};
                            y = stage.apply(value[q], 0);
                        }
                        fmaps[d.out][(oy * d.OW + ox) * d.C + c] = y;
                    }
                }
            }
        }
    }
}

// Element-wise add of two slots of N values (residual connections), spec section 6:
// PE values per cycle. About N / PE cycles.
template <Scheme S, int PE, int SLOT, class T>
void add_engine(const Step& d, T fmaps[][SLOT]) {
    const AddStage<S, T> stage = {d.za, d.zb, Requant{d.ma, d.sa}, Requant{d.mb, d.sb},
                                  {{Requant{d.m, d.s}}, d.zy, d.lo, d.hi}};
    for (int block = 0; block * PE < d.N; ++block) {
        LL_PIPELINE();
        for (int q = 0; q < PE; ++q) {
            LL_UNROLL();
            const int i = block * PE + q;
            if (i < d.N) fmaps[d.out][i] = stage.apply(fmaps[d.in0][i], fmaps[d.in1][i]);
        }
    }
}

}  // namespace seml
}  // namespace layerloom
