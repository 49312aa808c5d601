// RUN: python -c "import numpy as np; np.savez('%t.npz', x=np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 2, 4, 4))"
// RUN: layerloom-opt %s -p 'quantize{calib="%t.npz" scheme=pow2 per-channel=false keep-float=gap}' | filecheck %s

// A layer named in keep-float stays an nn op: a dequantize before it, and (since nothing
// after it is quantized here) no quantize after it. per-channel=false: one weight scale.
// CHECK-LABEL: func.func @main
// CHECK-NEXT:    %0 = qnn.quantize %x {scale = 1.562500e-02 : f64, zero_point = 0 : i64, name = "x.quantize"}
// CHECK-NEXT:    %1 = nn.weight "conv1.q" {name = "conv1", value = dense<{{\[\[\[\[}}32]], {{\[\[}}-16]]], {{\[\[\[}}64]], {{\[\[}}8]]], {{\[\[\[}}-48]], {{\[\[}}32]]]]> : tensor<3x2x1x1xi8>} : tensor<3x2x1x1xi8>
// CHECK-NEXT:    %2 = nn.weight "conv1.q_1" {name = "conv1", value = dense<[410, -819, 205]> : tensor<3xi32>} : tensor<3xi32>
// CHECK-NEXT:    %3 = qnn.conv2d %0, %1, %2 {{{.*}}weight_scales = array<f64: 1.562500e-02>, scale = 7.812500e-03 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 5>, activation = "relu", clamp_min = 0 : i64, name = "conv1"}
// CHECK-NEXT:    %4 = qnn.dequantize %3 {scale = 7.812500e-03 : f64, zero_point = 0 : i64, name = "conv1.dequantize"}
// CHECK-NEXT:    %g = nn.global_pool %4 {name = "gap", kind = "avg"} : (tensor<1x3x4x4xf32>) -> tensor<1x3x1x1xf32>
// CHECK-NEXT:    %f = nn.reshape %g {name = "flatten"} : (tensor<1x3x1x1xf32>) -> tensor<1x3xf32>
// CHECK-NEXT:    func.return %f
func.func @main(%x: tensor<1x2x4x4xf32> {nn.name = "x"}) -> (tensor<1x3xf32> {nn.name = "y"}) {
  %w = nn.weight "w" {value = dense<[[[[0.5]], [[-0.25]]], [[[1.0]], [[0.125]]], [[[-0.75]], [[0.5]]]]> : tensor<3x2x1x1xf32>} : tensor<3x2x1x1xf32>
  %b = nn.weight "b" {value = dense<[0.1, -0.2, 0.05]> : tensor<3xf32>} : tensor<3xf32>
  %c = nn.conv2d %x, %w, %b {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32>, tensor<3xf32>) -> tensor<1x3x4x4xf32>
  %r = nn.relu %c {name = "relu1"} : (tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
  %g = nn.global_pool %r {name = "gap", kind = "avg"} : (tensor<1x3x4x4xf32>) -> tensor<1x3x1x1xf32>
  %f = nn.reshape %g {name = "flatten"} : (tensor<1x3x1x1xf32>) -> tensor<1x3xf32>
  func.return %f : tensor<1x3xf32>
}
