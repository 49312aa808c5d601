// Shared by the C++ test libraries of tests/test_hls_templates.py (one shared object per
// family, driven through ctypes by backends/hls/csim.py).
//
// Convention: every exported function returns 0, or 1 with the reason in
// layerloom_last_error(). Each library lists its test cases in layerloom_cases(), one line
// per case, `name key=value ...`, so the Python side reads shapes and types from here
// instead of repeating them.
#pragma once

#include <cstdint>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>

#include "layerloom/layerloom.h"

namespace harness {

inline std::string& last_error() {
    static std::string message;
    return message;
}

inline std::string& case_list() {
    static std::string lines;
    return lines;
}

struct Register {
    explicit Register(const std::string& line) { case_list() += line + "\n"; }
};

// Run `body`, turning any exception (a stream read while empty, a wrong count) into status 1.
template <class Body>
int guarded(Body&& body) {
    try {
        body();
        return 0;
    } catch (const std::exception& e) {
        last_error() = e.what();
        return 1;
    }
}

template <class T>
void push(hls::stream<T>& stream, const void* data, int count) {
    const T* values = static_cast<const T*>(data);
    for (int i = 0; i < count; ++i) stream.write(values[i]);
}

// Drain exactly `count` values; fail if the stream holds fewer or more.
template <class T>
void pop(hls::stream<T>& stream, void* data, int count) {
    if (int(stream.size()) != count) {
        throw std::runtime_error("stream '" + stream.name() + "' holds " + std::to_string(stream.size()) +
                                 " values, expected " + std::to_string(count));
    }
    T* values = static_cast<T*>(data);
    for (int i = 0; i < count; ++i) values[i] = stream.read();
}

template <class T>
void expect_drained(const hls::stream<T>& stream) {
    if (!stream.empty()) {
        throw std::runtime_error("stream '" + stream.name() + "' has " + std::to_string(stream.size()) +
                                 " values left unread");
    }
}

// Type names as the Python side spells them.
template <class T>
constexpr const char* dtype_name();
template <>
constexpr const char* dtype_name<int8_t>() { return "i8"; }
template <>
constexpr const char* dtype_name<uint8_t>() { return "u8"; }
template <>
constexpr const char* dtype_name<int32_t>() { return "i32"; }
template <>
constexpr const char* dtype_name<float>() { return "f32"; }
template <>
constexpr const char* dtype_name<layerloom::half>() { return "f16"; }

// Stage families: how a test builds the stage of a layer with C parameter sets from the
// flat parameter buffer Python packs (see tests/test_hls_templates.py).
//   integer (int64): [z_in, z_weight, z_out, lo, hi, leaky, mult[C], shift[C], neg_mult[C], neg_shift[C]]
//   float (double):  [lo, hi, leaky, alpha]
template <layerloom::Scheme S, class Out>
struct IntStage {
    template <int C>
    using type = layerloom::OutputStage<S, Out, C>;
    static constexpr const char* name = S == layerloom::Scheme::pow2 ? "pow2" : "fixed";

    template <int C>
    static type<C> make(const void* buffer) {
        const int64_t* p = static_cast<const int64_t*>(buffer);
        type<C> stage{};
        stage.zero_point = int32_t(p[2]);
        stage.lo = int32_t(p[3]);
        stage.hi = int32_t(p[4]);
        stage.leaky = p[5] != 0;
        for (int c = 0; c < C; ++c) {
            stage.requant[c] = {int32_t(p[6 + c]), int32_t(p[6 + C + c])};
            stage.negative[c] = {int32_t(p[6 + 2 * C + c]), int32_t(p[6 + 3 * C + c])};
        }
        return stage;
    }
    // add / concat / requantize (int64): [z_a, z_b, z_out, lo, hi, mult_a, shift_a, mult_b, shift_b, mult, shift]
    static layerloom::Rescale<S, Out> make_rescale(const void* buffer, int operand) {
        const int64_t* p = static_cast<const int64_t*>(buffer);
        layerloom::Rescale<S, Out> rescale{};
        rescale.zero_point = int32_t(p[operand]);
        rescale.out.requant[0] = {int32_t(p[5 + 2 * operand]), int32_t(p[6 + 2 * operand])};
        rescale.out.zero_point = int32_t(p[2]);
        rescale.out.lo = int32_t(p[3]);
        rescale.out.hi = int32_t(p[4]);
        return rescale;
    }
    static layerloom::AddStage<S, Out> make_add(const void* buffer) {
        const int64_t* p = static_cast<const int64_t*>(buffer);
        const layerloom::Rescale<S, Out> a = make_rescale(buffer, 0), b = make_rescale(buffer, 1);
        layerloom::AddStage<S, Out> stage{};
        stage.zero_point_a = a.zero_point;
        stage.zero_point_b = b.zero_point;
        stage.operand_a = a.out.requant[0];
        stage.operand_b = b.out.requant[0];
        stage.out = a.out;
        stage.out.requant[0] = {int32_t(p[9]), int32_t(p[10])};
        return stage;
    }
    template <class T>
    static T input_zero_point(const void* buffer) {
        return T(static_cast<const int64_t*>(buffer)[0]);
    }
    template <class T>
    static T weight_zero_point(const void* buffer) {
        return T(static_cast<const int64_t*>(buffer)[1]);
    }
};

template <class T>
struct FloatStage {
    template <int C>
    using type = layerloom::Activation<T>;
    static constexpr const char* name = "float";

    template <int C>
    static type<C> make(const void* buffer) {
        const double* p = static_cast<const double*>(buffer);
        type<C> stage;
        stage.lo = T(float(p[0]));
        stage.hi = T(float(p[1]));
        stage.leaky = p[2] != 0.0;
        stage.alpha = T(float(p[3]));
        return stage;
    }
    // add (double): [lo, hi]; concat operands are copied.
    static layerloom::FloatAdd<T> make_add(const void* buffer) {
        const double* p = static_cast<const double*>(buffer);
        layerloom::FloatAdd<T> stage;
        stage.activation.lo = T(float(p[0]));
        stage.activation.hi = T(float(p[1]));
        return stage;
    }
    static layerloom::Copy<T> make_rescale(const void*, int) { return {}; }
    template <class U>
    static U input_zero_point(const void*) {
        return U(0);
    }
    template <class U>
    static U weight_zero_point(const void*) {
        return U(0);
    }
};

// The average-pooling stage of a family (one parameter set per count for integers).
template <class Family, class T>
struct AverageOf {
    template <int C>
    using type = typename Family::template type<C>;
    template <int C>
    static type<C> make(const void* buffer) {
        return Family::template make<C>(buffer);
    }
};
template <class T, class U>
struct AverageOf<FloatStage<T>, U> {
    template <int C>
    using type = layerloom::Average<T>;
    template <int C>
    static type<C> make(const void*) {
        return {};
    }
};

// `key=value` pairs of a window geometry.
template <class Win>
std::string describe_window() {
    std::ostringstream s;
    s << "C=" << Win::C << " H=" << Win::H << " W=" << Win::W << " KH=" << Win::KH << " KW=" << Win::KW
      << " SH=" << Win::SH << " SW=" << Win::SW << " PT=" << Win::PT << " PL=" << Win::PL << " PB=" << Win::PB
      << " PR=" << Win::PR << " DH=" << Win::DH << " DW=" << Win::DW << " CEIL=" << int(Win::CEIL)
      << " OH=" << Win::OH << " OW=" << Win::OW;
    return s.str();
}

}  // namespace harness

extern "C" const char* layerloom_last_error(void) { return harness::last_error().c_str(); }
extern "C" const char* layerloom_cases(void) { return harness::case_list().c_str(); }
