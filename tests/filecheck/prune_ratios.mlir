// RUN: layerloom-opt %s -p 'prune{ratios="wide:0.6" multiple=4}' | filecheck %s

// A named layer: 'wide' (8 channels, L1 norms 1..8) pruned by 0.6 would keep 3.2
// channels, rounded to the nearest multiple of 4: 4 (channels 4-7); 'narrow' is not named
// and keeps its 4 channels, losing only its input channels.
// CHECK-LABEL: func.func @wide
// CHECK-NEXT:    %w = nn.weight "wide.w.pruned" {value = dense<{{\[\[\[\[}}5.000000e+00]]], {{\[\[\[}}6.000000e+00]]], {{\[\[\[}}7.000000e+00]]], {{\[\[\[}}8.000000e+00]]]]> : tensor<4x1x1x1xf32>}
// CHECK-NEXT:    %n = nn.weight "narrow.w.pruned" {{.*}} : tensor<4x4x1x1xf32>
// CHECK:         nn.conv2d %x, %w {{.*}} -> tensor<1x4x1x1xf32>
// CHECK-NEXT:    nn.conv2d %c, %n {{.*}} -> tensor<1x4x1x1xf32>
func.func @wide(%x: tensor<1x1x1x1xf32>) -> tensor<1x1x1x1xf32> {
  %w = nn.weight "wide.w" {value = dense<[[[[1.0]]], [[[2.0]]], [[[3.0]]], [[[4.0]]], [[[5.0]]], [[[6.0]]], [[[7.0]]], [[[8.0]]]]> : tensor<8x1x1x1xf32>} : tensor<8x1x1x1xf32>
  %n = nn.weight "narrow.w" {value = dense<1.0> : tensor<4x8x1x1xf32>} : tensor<4x8x1x1xf32>
  %o = nn.weight "out.w" {value = dense<1.0> : tensor<1x4x1x1xf32>} : tensor<1x4x1x1xf32>
  %c = nn.conv2d %x, %w {name = "wide", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x1x1xf32>, tensor<8x1x1x1xf32>) -> tensor<1x8x1x1xf32>
  %d = nn.conv2d %c, %n {name = "narrow", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x8x1x1xf32>, tensor<4x8x1x1xf32>) -> tensor<1x4x1x1xf32>
  %y = nn.conv2d %d, %o {name = "out", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x1x1xf32>, tensor<1x4x1x1xf32>) -> tensor<1x1x1x1xf32>
  func.return %y : tensor<1x1x1x1xf32>
}
