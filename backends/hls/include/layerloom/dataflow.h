// layerloom HLS library: the adapters lower-to-hls puts between layer kernels.
//
// - fork: one stream to several (a feature map read by two layers, e.g. a residual skip);
// - stream_to_buffer: a stream into an array, the producer side of a double (ping-pong)
//   buffer: in a DATAFLOW region an array passed from one process to the next becomes a
//   PIPO, so the pipeline fills one half while the reused engines read the other;
// - buffer_copy / buffer_to_stream: the reused engines' side (into an arena slot, out of
//   one onto a stream).
// All move one value per cycle (II=1).
#pragma once

#include "shim.h"

namespace layerloom {

// Copies each of the N values of `in` to every output stream.
template <int N, class T, class... Outs>
void fork(hls::stream<T>& in, Outs&... outs) {
    static_assert(sizeof...(Outs) >= 2, "a fork has at least two outputs");
    for (int i = 0; i < N; ++i) {
        LL_PIPELINE();
        const T value = in.read();
        (outs.write(value), ...);
    }
}

template <int N, class T>
void stream_to_buffer(hls::stream<T>& in, T buffer[N]) {
    for (int i = 0; i < N; ++i) {
        LL_PIPELINE();
        buffer[i] = in.read();
    }
}

template <int N, class T>
void buffer_to_stream(const T buffer[N], hls::stream<T>& out) {
    for (int i = 0; i < N; ++i) {
        LL_PIPELINE();
        out.write(buffer[i]);
    }
}

template <int N, class T>
void buffer_copy(const T from[N], T to[N]) {
    for (int i = 0; i < N; ++i) {
        LL_PIPELINE();
        to[i] = from[i];
    }
}

}  // namespace layerloom
