// The C simulation side of the example: a predict() entry point for ctypes
// (backends/hls/csim.py), as the driver's generated testbench has.
#include "example_top.h"
#include "harness.h"

extern "C" int example_predict(const int8_t* images, const int8_t* weights, const int32_t* biases, int8_t* scores,
                               int64_t conv_shift, int64_t dense_shift, int64_t batch) {
    return harness::guarded([&] {
        hls::stream<int8_t> input("input");
        hls::stream<int8_t> output("output");
        harness::push(input, images, int(batch) * example::IMAGE);
        example_top(input, output, weights, biases, int(conv_shift), int(dense_shift), int(batch));
        harness::expect_drained(input);
        harness::pop(output, scores, int(batch) * example::DENSE_N);
    });
}
