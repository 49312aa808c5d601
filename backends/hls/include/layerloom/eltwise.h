// layerloom HLS library: element-wise stages on streams (one value per beat, II=1).
#pragma once

#include "numeric.h"
#include "quant.h"
#include "shim.h"

namespace layerloom {

// y = stage.apply(x) for N values: qnn.requantize (Rescale), qnn.lut (Lookup), the graph's
// first quantize (Quantize) and last dequantize (Dequantize), a standalone float
// activation (Activation).
template <int N, class In, class Stage>
void elementwise(hls::stream<In>& in, hls::stream<typename Stage::out_t>& out, const Stage& stage) {
    for (int i = 0; i < N; ++i) {
        LL_PIPELINE();
        out.write(stage.apply(in.read()));
    }
}

// The requantization stage (qnn.requantize): y = output_stage(x - z_x).
template <int N, class In, Scheme S, class Out>
void requantize(hls::stream<In>& in, hls::stream<Out>& out, const Rescale<S, Out>& rescale) {
    elementwise<N>(in, out, rescale);
}

// Element-wise add of two streams of the same shape (residual connections). Integer
// stage: AddStage (docs/quantization.md section 6); float: FloatAdd.
template <int N, class A, class B, class Stage>
void add(hls::stream<A>& a, hls::stream<B>& b, hls::stream<typename Stage::out_t>& out, const Stage& stage) {
    for (int i = 0; i < N; ++i) {
        LL_PIPELINE();
        out.write(stage.apply(a.read(), b.read()));
    }
}

// Concat along channels of two HWC streams with PIXELS pixels: each pixel's CA values of
// `a`, then its CB values of `b`, each through its own stage (Rescale to the output scale;
// Copy for floats).
template <int PIXELS, int CA, int CB, class A, class B, class StageA, class StageB>
void concat_channels(hls::stream<A>& a, hls::stream<B>& b, hls::stream<typename StageA::out_t>& out,
                     const StageA& stage_a, const StageB& stage_b) {
    for (int pixel = 0; pixel < PIXELS; ++pixel) {
        for (int c = 0; c < CA + CB; ++c) {
            LL_PIPELINE();
            out.write(c < CA ? stage_a.apply(a.read()) : stage_b.apply(b.read()));
        }
    }
}

}  // namespace layerloom
