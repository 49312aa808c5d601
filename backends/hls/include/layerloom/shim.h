// layerloom HLS library: the platform layer.
//
// Under Vitis HLS (synthesis, or C simulation with the Vitis include path) this includes
// the real <ap_int.h> and <hls_stream.h>. Anywhere else (plain g++ / clang++ -std=c++17)
// it defines a small portable shim of our own: hls::stream<T> on a std::deque, and
// ap_int<N> / ap_uint<N> as far as layerloom uses them. Define LAYERLOOM_PORTABLE to force
// the shim even where the Vitis headers are on the include path.
//
// Pragmas: kernels write LL_PRAGMA(HLS ...) (or the named helpers below). They expand to
// _Pragma("HLS ...") only when __SYNTHESIS__ is defined, and to nothing otherwise, so a
// plain compiler never sees an unknown pragma and -Wall -Wextra -Werror stays clean.
#pragma once

#include <cstdint>

#if defined(__SYNTHESIS__) || (!defined(LAYERLOOM_PORTABLE) && defined(__has_include))
#if defined(__SYNTHESIS__) || (__has_include(<hls_stream.h>) && __has_include(<ap_int.h>))
#define LAYERLOOM_VITIS 1
#endif
#endif

#ifdef __SYNTHESIS__
#define LL_PRAGMA(text) _Pragma(#text)
#else
#define LL_PRAGMA(text)
#endif

// The pragmas the templates use, named so that a kernel reads as its schedule.
#define LL_PIPELINE() LL_PRAGMA(HLS PIPELINE II=1)
#define LL_UNROLL() LL_PRAGMA(HLS UNROLL)
#define LL_UNROLL_BY(count) LL_PRAGMA(HLS UNROLL factor=count)
#define LL_DATAFLOW() LL_PRAGMA(HLS DATAFLOW)
#define LL_INLINE() LL_PRAGMA(HLS INLINE)
#define LL_PARTITION_COMPLETE(array, dimension) LL_PRAGMA(HLS ARRAY_PARTITION variable=array type=complete dim=dimension)
#define LL_PARTITION_CYCLIC(array, count, dimension) \
    LL_PRAGMA(HLS ARRAY_PARTITION variable=array type=cyclic factor=count dim=dimension)
#define LL_STREAM_DEPTH(name, count) LL_PRAGMA(HLS STREAM variable=name depth=count)
#define LL_INTERFACE(...) LL_PRAGMA(HLS INTERFACE __VA_ARGS__)

#ifdef LAYERLOOM_VITIS

#include <ap_int.h>
#include <hls_stream.h>

#else  // the portable shim

#include <cstddef>
#include <deque>
#include <stdexcept>
#include <string>
#include <utility>

namespace hls {

// A FIFO with the hls::stream interface. Unbounded, as in Vitis C simulation, where
// the processes of a DATAFLOW region run one after the other. Reading an empty stream is
// a bug in the design: it throws instead of returning garbage.
template <class T>
class stream {
  public:
    stream() : name_("stream") {}
    explicit stream(const char* name) : name_(name) {}
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;

    void write(const T& value) { fifo_.push_back(value); }
    T read() {
        if (fifo_.empty()) {
            throw std::underflow_error("hls::stream '" + name_ + "' read while empty");
        }
        T value = std::move(fifo_.front());
        fifo_.pop_front();
        return value;
    }
    void read(T& value) { value = read(); }
    bool read_nb(T& value) {
        if (fifo_.empty()) return false;
        value = read();
        return true;
    }
    bool write_nb(const T& value) {
        write(value);
        return true;
    }
    stream& operator<<(const T& value) {
        write(value);
        return *this;
    }
    stream& operator>>(T& value) {
        value = read();
        return *this;
    }
    bool empty() const { return fifo_.empty(); }
    bool full() const { return false; }
    std::size_t size() const { return fifo_.size(); }
    const std::string& name() const { return name_; }

  private:
    std::string name_;
    std::deque<T> fifo_;
};

}  // namespace hls

// N-bit two's-complement integers (N <= 64) that wrap on assignment, as ap_int does with
// its default AP_WRAP overflow mode. Arithmetic happens on the int64 / uint64 value, so an
// expression's result must be assigned to an ap type (or checked) to wrap.
template <int N>
class ap_int {
    static_assert(N >= 1 && N <= 64, "the shim's ap_int holds at most 64 bits");

  public:
    ap_int() : value_(0) {}
    ap_int(int64_t value) : value_(wrap(value)) {}  // NOLINT: implicit, as the real ap_int
    operator int64_t() const { return value_; }
    int64_t to_int64() const { return value_; }
    static int64_t wrap(int64_t value) {
        if constexpr (N == 64) {
            return value;
        } else {
            const uint64_t mask = (uint64_t(1) << N) - 1;
            const uint64_t bits = uint64_t(value) & mask;
            const uint64_t sign = uint64_t(1) << (N - 1);
            return (bits & sign) ? int64_t(bits | ~mask) : int64_t(bits);
        }
    }

  private:
    int64_t value_;
};

template <int N>
class ap_uint {
    static_assert(N >= 1 && N <= 64, "the shim's ap_uint holds at most 64 bits");

  public:
    ap_uint() : value_(0) {}
    ap_uint(uint64_t value) : value_(wrap(value)) {}  // NOLINT: implicit, as the real ap_uint
    operator uint64_t() const { return value_; }
    uint64_t to_uint64() const { return value_; }
    static uint64_t wrap(uint64_t value) {
        if constexpr (N == 64) {
            return value;
        } else {
            return value & ((uint64_t(1) << N) - 1);
        }
    }
    // Bits [hi, lo] as an unsigned value (ap_uint's range()).
    uint64_t range(int hi, int lo) const {
        const int width = hi - lo + 1;
        return width == 64 ? value_ : (value_ >> lo) & ((uint64_t(1) << width) - 1);
    }

  private:
    uint64_t value_;
};

#endif  // LAYERLOOM_VITIS
