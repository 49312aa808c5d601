// RUN: layerloom-opt %s -p 'lower-to-hls{dtype=half pes=2}' | filecheck %s --check-prefix=HALF
// RUN: layerloom-opt %s -p 'lower-to-hls{dtype=float pes=2}' | filecheck %s --check-prefix=FLOAT

// A float program (no quantize): pointwise conv with a fused relu, global average pool,
// flatten, dense with a leaky relu behind it.

// dtype=half: convert kernels join the float32 ports to half streams; every weight is
// rounded to half (a new weight <handle>.f16; 0.1 becomes 0.0999756); the payloads are f16;
// the leaky relu behind the dense layer is taken into its payload; nothing requantizes.
// HALF:      dataflow.top @main attributes {arch = "sesl", scheme = "none"} {
// HALF-NEXT:   %[[X:.*]] = dataflow.stream {name = "x", {{.*}} port = "in"} : !dataflow.stream<f32>
// HALF-NEXT:   %[[XH:.*]] = dataflow.stream {name = "x_half", {{.*}}} : !dataflow.stream<f16>
// HALF-NEXT:   %[[C:.*]] = dataflow.stream {name = "conv1_out", {{.*}}} : !dataflow.stream<f16>
// HALF-NEXT:   %[[G:.*]] = dataflow.stream {name = "gap_out", {{.*}}} : !dataflow.stream<f16>
// HALF-NEXT:   %[[YH:.*]] = dataflow.stream {name = "y_half", {{.*}}} : !dataflow.stream<f16>
// HALF-NEXT:   %[[Y:.*]] = dataflow.stream {name = "y", {{.*}} port = "out"} : !dataflow.stream<f32>
// HALF-NEXT:   dataflow.kernel "convert" %[[X]] -> %[[XH]] attributes {params = {N = 32 : i64}, pes = 1 : i64, layer = "input_to_half"} : !dataflow.stream<f32> -> !dataflow.stream<f16>
// HALF-NEXT:   dataflow.kernel "pointwise_conv2d" %[[XH]] -> %[[C]] attributes {params = {C = 2 : i64, H = 4 : i64, W = 4 : i64, M = 2 : i64}, pes = 2 : i64, layer = "conv1"}
// HALF-NEXT:   ^{{.*}}(%{{.*}}: tensor<1x2x4x4xf16>):
// HALF-NEXT:     %{{.*}} = nn.weight "conv1.w.f16" {{.*}} : tensor<2x2x1x1xf16>
// HALF-NEXT:     %{{.*}} = nn.weight "conv1.b.f16" {name = "conv1", value = dense<[9.997560e-02, -9.997560e-02]> : tensor<2xf16>} : tensor<2xf16>
// HALF-NEXT:     %{{.*}} = nn.conv2d {{.*}} activation = "relu"{{.*}} -> tensor<1x2x4x4xf16>
// HALF:        dataflow.kernel "global_avg_pool" %[[C]] -> %[[G]]
// HALF:        dataflow.kernel "dense" %[[G]] -> %[[YH]] attributes {params = {K = 2 : i64, N = 3 : i64}, pes = 1 : i64, layer = "fc"}
// HALF-NEXT:   ^{{.*}}(%{{.*}}: tensor<1x2xf16>):
// HALF-NEXT:     %{{.*}} = nn.weight "fc.w.f16"
// HALF-NEXT:     %[[D:.*]] = nn.gemm {{.*}} -> tensor<1x3xf16>
// HALF-NEXT:     %[[A:.*]] = nn.leaky_relu %[[D]] {alpha = 1.000000e-01 : f64, name = "act"} : (tensor<1x3xf16>) -> tensor<1x3xf16>
// HALF-NEXT:     dataflow.yield %[[A]] : tensor<1x3xf16>
// HALF-NEXT:   }
// HALF-NEXT:   dataflow.kernel "convert" %[[YH]] -> %[[Y]] attributes {params = {N = 3 : i64}, pes = 1 : i64, layer = "output_to_float"} : !dataflow.stream<f16> -> !dataflow.stream<f32>
// HALF-NEXT: }

// dtype=float: the same kernels on f32 streams, the weights as they are, no conversions.
// FLOAT:      dataflow.top @main attributes {arch = "sesl", scheme = "none"} {
// FLOAT-NOT:  f16
// FLOAT-NOT:  "convert"
// FLOAT:      dataflow.kernel "pointwise_conv2d" %{{.*}} -> %{{.*}} {{.*}} : !dataflow.stream<f32> -> !dataflow.stream<f32> {
// FLOAT:        nn.weight "conv1.w" {{.*}} : tensor<2x2x1x1xf32>
// FLOAT:      dataflow.kernel "dense" {{.*}} : !dataflow.stream<f32> -> !dataflow.stream<f32> {
// FLOAT:        nn.leaky_relu
// FLOAT-NOT:  "convert"

func.func @main(%x: tensor<1x2x4x4xf32> {nn.name = "x"}) -> (tensor<1x3xf32> {nn.name = "y"}) {
  %w1 = nn.weight "conv1.w" {name = "conv1", value = dense<[[[[0.5]], [[-0.25]]], [[[1.0]], [[0.125]]]]> : tensor<2x2x1x1xf32>} : tensor<2x2x1x1xf32>
  %b1 = nn.weight "conv1.b" {name = "conv1", value = dense<[0.1, -0.1]> : tensor<2xf32>} : tensor<2xf32>
  %c1 = nn.conv2d %x, %w1, %b1 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "relu", name = "conv1"} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
  %g = nn.global_pool %c1 {kind = "avg", name = "gap"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x1x1xf32>
  %f = nn.reshape %g {name = "flatten"} : (tensor<1x2x1x1xf32>) -> tensor<1x2xf32>
  %w2 = nn.weight "fc.w" {name = "fc", value = dense<[[1.0, 2.0], [3.0, 4.0], [0.1, 0.2]]> : tensor<3x2xf32>} : tensor<3x2xf32>
  %d = nn.gemm %f, %w2 {trans_a = 0 : i64, trans_b = 1 : i64, alpha = 1.0 : f64, beta = 1.0 : f64, name = "fc"} : (tensor<1x2xf32>, tensor<3x2xf32>) -> tensor<1x3xf32>
  %y = nn.leaky_relu %d {alpha = 0.1 : f64, name = "act"} : (tensor<1x3xf32>) -> tensor<1x3xf32>
  func.return %y : tensor<1x3xf32>
}
