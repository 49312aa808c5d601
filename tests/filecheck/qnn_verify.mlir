// RUN: layerloom-opt %s --split-input-file --verify-diagnostics | filecheck %s

// Well-formed qnn IR prints back in the same form; the qnn verifiers reject parameters
// that disagree with the scales or leave the ranges of docs/quantization.md.

// CHECK:      %c = qnn.conv2d %q, %w, %b {name = "conv1", {{.*}}scheme = "pow2", shifts = array<i64: 8>, activation = "relu", clamp_min = 0 : i64}
// CHECK-SAME: -> tensor<1x4x8x8xi8>
// CHECK:      %y = qnn.dequantize %c {scale = 1.250000e-01 : f64, zero_point = 0 : i64}
func.func @pow2_conv(%x: tensor<1x3x8x8xf32>) -> tensor<1x4x8x8xf32> {
  %q = qnn.quantize %x {scale = 0.0625 : f64, zero_point = 0 : i64} : (tensor<1x3x8x8xf32>) -> tensor<1x3x8x8xi8>
  %w = nn.weight "w" : tensor<4x3x3x3xi8>
  %b = nn.weight "b" : tensor<4xi32>
  %c = qnn.conv2d %q, %w, %b {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 0.0625 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 0.0078125>, scale = 0.125 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 8>, activation = "relu", clamp_min = 0 : i64} : (tensor<1x3x8x8xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x8x8xi8>
  %y = qnn.dequantize %c {scale = 0.125 : f64, zero_point = 0 : i64} : (tensor<1x4x8x8xi8>) -> tensor<1x4x8x8xf32>
  func.return %y : tensor<1x4x8x8xf32>
}

// -----

// s_x * s_w / s_y = 2^-4 * 2^-7 / 2^-3 = 2^-8: a shift of 7 is wrong.
// CHECK: qnn.conv2d 'conv2': multipliers[0] stands for 0.0078125 but the scales call for 0.00390625
func.func @wrong_shift(%x: tensor<1x3x8x8xf32>) -> tensor<1x4x8x8xi8> {
  %q = qnn.quantize %x {scale = 0.0625 : f64, zero_point = 0 : i64} : (tensor<1x3x8x8xf32>) -> tensor<1x3x8x8xi8>
  %w = nn.weight "w" : tensor<4x3x3x3xi8>
  %c = qnn.conv2d %q, %w {name = "conv2", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 0.0625 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 0.0078125>, scale = 0.125 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 7>} : (tensor<1x3x8x8xi8>, tensor<4x3x3x3xi8>) -> tensor<1x4x8x8xi8>
  func.return %c : tensor<1x4x8x8xi8>
}

// -----

// CHECK: qnn.add 'res': operand 0 quantization (scale 0.25, zero point 0) differs from its producer's (scale 0.125, zero point 0)
func.func @add_disagrees_with_producer(%x: tensor<1x4xf32>) -> tensor<1x4xi8> {
  %a = qnn.quantize %x {scale = 0.125 : f64, zero_point = 0 : i64} : (tensor<1x4xf32>) -> tensor<1x4xi8>
  %y = qnn.add %a, %a {name = "res", input_scales = array<f64: 0.25, 0.125>, input_zero_points = array<i64: 0, 0>, scheme = "pow2", operand_shifts = array<i64: 0, -1>, shifts = array<i64: 0>, scale = 0.0625 : f64, zero_point = 0 : i64} : (tensor<1x4xi8>, tensor<1x4xi8>) -> tensor<1x4xi8>
  func.return %y : tensor<1x4xi8>
}

// -----

// CHECK: qnn.gemm 'fc': fixed multipliers must lie in [2^30, 2^31) (or be 0), got [5]
func.func @multiplier_range(%x: tensor<1x4xf32>) -> tensor<1x2xi8> {
  %a = qnn.quantize %x {scale = 0.02 : f64, zero_point = 0 : i64} : (tensor<1x4xf32>) -> tensor<1x4xi8>
  %w = nn.weight "w" : tensor<2x4xi8>
  %y = qnn.gemm %a, %w {name = "fc", trans_b = 1 : i64, input_scale = 0.02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 0.005>, scale = 0.05 : f64, zero_point = 0 : i64, scheme = "fixed", multipliers = array<i64: 5>, shifts = array<i64: 8>} : (tensor<1x4xi8>, tensor<2x4xi8>) -> tensor<1x2xi8>
  func.return %y : tensor<1x2xi8>
}
