// Test-case wrappers: one exported C function per template instantiation, taking flat
// arrays (HWC activations, weights as the templates expect them) and a parameter buffer
// (see harness.h), and registering a description line for the Python side.
#pragma once

#include <sstream>
#include <string>

#include "harness.h"

namespace harness {

// ---------------------------------------------------------------------------------------
// Contractions: conv2d (direct / im2row), depthwise, pointwise, dense
// ---------------------------------------------------------------------------------------

enum class Impl { direct, im2row, depthwise, pointwise, dense };

constexpr const char* impl_name(Impl impl) {
    return impl == Impl::direct      ? "direct"
           : impl == Impl::im2row    ? "im2row"
           : impl == Impl::depthwise ? "depthwise"
           : impl == Impl::pointwise ? "pointwise"
                                     : "dense";
}

template <Impl I, class Win, int G>
constexpr int weight_columns() {
    return I == Impl::depthwise ? Win::TAPS : Win::C / G * Win::TAPS;
}

template <Impl I, class Win, int M, int G, int PE, class T, class Wt, class Bias, class Family>
int run_conv(const void* x, const void* w, const void* b, const void* params, void* y) {
    return guarded([&] {
        using Stage = typename Family::template type<M>;
        using Out = typename Stage::out_t;
        constexpr int K = weight_columns<I, Win, G>();
        const Stage stage = Family::template make<M>(params);
        const T zx = Family::template input_zero_point<T>(params);
        const Wt zw = Family::template weight_zero_point<Wt>(params);
        const auto* weights = static_cast<const Wt(*)[K]>(w);
        const Bias* bias = static_cast<const Bias*>(b);
        hls::stream<T> in("in");
        hls::stream<Out> out("out");
        push(in, x, Win::C * Win::H * Win::W);
        if constexpr (I == Impl::direct) {
            layerloom::conv2d<Win, M, PE, G>(in, out, weights, bias, stage, zx, zw);
        } else if constexpr (I == Impl::im2row) {
            layerloom::conv2d_im2row<Win, M, PE>(in, out, weights, bias, stage, zx, zw);
        } else if constexpr (I == Impl::depthwise) {
            layerloom::depthwise_conv2d<Win, M, PE>(in, out, weights, bias, stage, zx, zw);
        } else if constexpr (I == Impl::pointwise) {
            layerloom::pointwise_conv2d<Win::C, Win::H, Win::W, M, PE>(in, out, weights, bias, stage, zx, zw);
        } else {
            layerloom::dense<Win::C, M, PE>(in, out, weights, bias, stage, zx, zw);
        }
        expect_drained(in);
        pop(out, y, Win::OH * Win::OW * M);
    });
}

template <Impl I, class Win, int M, int G, int PE, class T, class Wt, class Family>
std::string describe_conv(const char* name) {
    using Out = typename Family::template type<M>::out_t;
    std::ostringstream s;
    s << name << " kind=conv impl=" << impl_name(I) << " stage=" << Family::name << " in=" << dtype_name<T>()
      << " weight=" << dtype_name<Wt>() << " out=" << dtype_name<Out>() << " M=" << M << " G=" << G
      << " PE=" << PE << " " << describe_window<Win>();
    return s.str();
}

// ---------------------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------------------

enum class Pool { max, avg, global_max, global_avg };

constexpr const char* pool_name(Pool pool) {
    return pool == Pool::max ? "max" : pool == Pool::avg ? "avg" : pool == Pool::global_max ? "global_max" : "global_avg";
}

template <Pool P, class Win, int PE, bool INCLUDE_PAD, class T, class Family>
int run_pool(const void* x, const void* params, void* y) {
    return guarded([&] {
        const T zx = Family::template input_zero_point<T>(params);
        hls::stream<T> in("in");
        push(in, x, Win::C * Win::H * Win::W);
        constexpr bool global = P == Pool::global_max || P == Pool::global_avg;
        constexpr int count = global ? Win::C : Win::OH * Win::OW * Win::C;
        if constexpr (P == Pool::max || P == Pool::global_max) {
            hls::stream<T> out("out");
            if constexpr (P == Pool::max) {
                layerloom::max_pool2d<Win, PE>(in, out);
            } else {
                layerloom::global_max_pool<Win::C, Win::H, Win::W>(in, out);
            }
            expect_drained(in);
            pop(out, y, count);
        } else {
            constexpr int sets = global ? 1 : Win::TAPS;
            using Stage = typename AverageOf<Family, T>::template type<sets>;
            const Stage stage = AverageOf<Family, T>::template make<sets>(params);
            hls::stream<typename Stage::out_t> out("out");
            if constexpr (P == Pool::avg) {
                layerloom::avg_pool2d<Win, PE, INCLUDE_PAD>(in, out, stage, zx);
            } else {
                layerloom::global_avg_pool<Win::C, Win::H, Win::W>(in, out, stage, zx);
            }
            expect_drained(in);
            pop(out, y, count);
        }
    });
}

template <Pool P, class Win, int PE, bool INCLUDE_PAD, class T, class Family>
std::string describe_pool(const char* name) {
    std::ostringstream s;
    s << name << " kind=pool pool=" << pool_name(P) << " stage=" << Family::name << " in=" << dtype_name<T>()
      << " PE=" << PE << " INCLUDE_PAD=" << int(INCLUDE_PAD) << " " << describe_window<Win>();
    return s.str();
}

// ---------------------------------------------------------------------------------------
// Element-wise: add, concat, requantize, lookup, quantize, dequantize
// ---------------------------------------------------------------------------------------

template <int N, class A, class B, class Family>
int run_add(const void* a, const void* b, const void* params, void* y) {
    return guarded([&] {
        const auto stage = Family::make_add(params);
        hls::stream<A> in_a("a");
        hls::stream<B> in_b("b");
        hls::stream<typename decltype(stage)::out_t> out("out");
        push(in_a, a, N);
        push(in_b, b, N);
        layerloom::add<N>(in_a, in_b, out, stage);
        expect_drained(in_a);
        expect_drained(in_b);
        pop(out, y, N);
    });
}

template <int PIXELS, int CA, int CB, class A, class B, class Family>
int run_concat(const void* a, const void* b, const void* params, void* y) {
    return guarded([&] {
        const auto stage_a = Family::make_rescale(params, 0);
        const auto stage_b = Family::make_rescale(params, 1);
        hls::stream<A> in_a("a");
        hls::stream<B> in_b("b");
        hls::stream<typename decltype(stage_a)::out_t> out("out");
        push(in_a, a, PIXELS * CA);
        push(in_b, b, PIXELS * CB);
        layerloom::concat_channels<PIXELS, CA, CB>(in_a, in_b, out, stage_a, stage_b);
        expect_drained(in_a);
        expect_drained(in_b);
        pop(out, y, PIXELS * (CA + CB));
    });
}

// Any unary stage over N values; `make(params)` builds it.
template <int N, class In, class Stage, class Make>
int run_elementwise(const void* x, const void* params, void* y, Make make) {
    return guarded([&] {
        const Stage stage = make(params);
        hls::stream<In> in("in");
        hls::stream<typename Stage::out_t> out("out");
        push(in, x, N);
        layerloom::elementwise<N>(in, out, stage);
        expect_drained(in);
        pop(out, y, N);
    });
}

template <class... Types>
std::string describe_types(const char* name, const char* kind, const char* stage, int n) {
    std::ostringstream s;
    s << name << " kind=" << kind << " stage=" << stage << " N=" << n << " types=";
    const char* names[] = {dtype_name<Types>()...};
    for (std::size_t i = 0; i < sizeof...(Types); ++i) s << (i ? "," : "") << names[i];
    return s.str();
}

}  // namespace harness

// The geometries the tests share (C, H, W, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, CEIL).
namespace shapes {
using layerloom::Window;
using Same3x3 = Window<3, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1>;  // the common case
// 3x2 kernel, strides 2, asymmetric pads, dilation 2 along H.
using Odd = Window<4, 9, 8, 3, 2, 2, 2, 1, 0, 2, 1, 2, 1>;
using Strided1x1 = Window<5, 6, 6, 1, 1, 2, 2>;             // subsamples: not a pointwise conv
using Deep = Window<64, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1>;       // K = 576
using Depthwise = Window<6, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1>;
using Pixels = Window<8, 5, 4, 1, 1>;  // pointwise
using Vector = Window<40, 1, 1, 1, 1>;  // dense: K = 40
// Pooling: 3x3 stride 2 pad 1 in ceil mode (windows past the end), 2x2 stride 2, and a
// dilated floor-mode window that leaves input rows unused.
using Ceil3x3 = Window<4, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true>;
using Half2x2 = Window<6, 6, 8, 2, 2, 2, 2>;
using Dilated = Window<3, 10, 9, 2, 3, 3, 2, 1, 0, 0, 2, 2, 2>;
using Whole = Window<5, 4, 3, 4, 3>;  // global pooling
}  // namespace shapes

// Instantiate and register one case of each kind. Template arguments containing commas go
// through a `using` alias first.
#define LL_CONV_CASE(NAME, IMPL, WIN, M, G, PE, T, WT, BIAS, FAMILY)                                   \
    extern "C" int NAME(const void* x, const void* w, const void* b, const void* p, void* y) {         \
        return harness::run_conv<harness::Impl::IMPL, WIN, M, G, PE, T, WT, BIAS, FAMILY>(x, w, b, p, y); \
    }                                                                                                  \
    static const harness::Register NAME##_case(                                                        \
        harness::describe_conv<harness::Impl::IMPL, WIN, M, G, PE, T, WT, FAMILY>(#NAME))

#define LL_POOL_CASE(NAME, POOL, WIN, PE, INCLUDE_PAD, T, FAMILY)                                       \
    extern "C" int NAME(const void* x, const void* p, void* y) {                                       \
        return harness::run_pool<harness::Pool::POOL, WIN, PE, INCLUDE_PAD, T, FAMILY>(x, p, y);       \
    }                                                                                                  \
    static const harness::Register NAME##_case(                                                        \
        harness::describe_pool<harness::Pool::POOL, WIN, PE, INCLUDE_PAD, T, FAMILY>(#NAME))

#define LL_ADD_CASE(NAME, N, A, B, FAMILY)                                                             \
    extern "C" int NAME(const void* a, const void* b, const void* p, void* y) {                        \
        return harness::run_add<N, A, B, FAMILY>(a, b, p, y);                                          \
    }                                                                                                  \
    static const harness::Register NAME##_case(                                                        \
        harness::describe_types<A, B, FAMILY::type<1>::out_t>(#NAME, "add", FAMILY::name, N))

#define LL_CONCAT_CASE(NAME, PIXELS, CA, CB, A, B, FAMILY)                                             \
    extern "C" int NAME(const void* a, const void* b, const void* p, void* y) {                        \
        return harness::run_concat<PIXELS, CA, CB, A, B, FAMILY>(a, b, p, y);                          \
    }                                                                                                  \
    static const harness::Register NAME##_case(harness::describe_types<A, B, FAMILY::type<1>::out_t>( \
        #NAME, "concat", FAMILY::name, PIXELS) + " CA=" + std::to_string(CA) + " CB=" + std::to_string(CB))
