// RUN: layerloom-opt %s --split-input-file -p fold-batchnorm | filecheck %s

// conv + bias: s = scale / sqrt(var + eps) = [2, 1], t = bias - s * mean = [-1.5, -2];
// W' = s * W = [2, 2], b' = s * b + t = [0.5, -3].
// CHECK-LABEL: func.func @conv_bias
// CHECK-NEXT:    %w = nn.weight "conv1.w.bn" {value = dense<2.000000e+00> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
// CHECK-NEXT:    %b = nn.weight "conv1.b.bn" {value = dense<[5.000000e-01, -3.000000e+00]> : tensor<2xf32>} : tensor<2xf32>
// CHECK-NEXT:    %c = nn.conv2d %x, %w, %b {name = "conv1", {{.*}}} : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
// CHECK-NEXT:    func.return %c
func.func @conv_bias(%x: tensor<1x1x2x2xf32>) -> tensor<1x2x2x2xf32> {
  %w = nn.weight "conv1.w" {value = dense<[[[[1.0]]], [[[2.0]]]]> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
  %b = nn.weight "conv1.b" {value = dense<[1.0, -1.0]> : tensor<2xf32>} : tensor<2xf32>
  %scale = nn.weight "bn.scale" {value = dense<[4.0, 3.0]> : tensor<2xf32>} : tensor<2xf32>
  %bias = nn.weight "bn.bias" {value = dense<[0.5, 0.0]> : tensor<2xf32>} : tensor<2xf32>
  %mean = nn.weight "bn.mean" {value = dense<[1.0, 2.0]> : tensor<2xf32>} : tensor<2xf32>
  %var = nn.weight "bn.var" {value = dense<[3.0, 8.0]> : tensor<2xf32>} : tensor<2xf32>
  %c = nn.conv2d %x, %w, %b {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
  %y = nn.batchnorm %c, %scale, %bias, %mean, %var {name = "bn1", epsilon = 1.0 : f64} : (tensor<1x2x2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
  func.return %y : tensor<1x2x2x2xf32>
}

// -----

// Depthwise conv (group = 2) without a bias: s = [0.5, 1], t = [0, 2]; the new bias is t.
// CHECK-LABEL: func.func @depthwise_no_bias
// CHECK-NEXT:    %w = nn.weight "dw.w.bn" {value = dense<{{\[\[\[\[}}5.000000e-01]]], {{\[\[\[}}2.000000e+00]]]]> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
// CHECK-NEXT:    %bias = nn.weight "dw.bias.bn" {value = dense<[0.000000e+00, 2.000000e+00]> : tensor<2xf32>} : tensor<2xf32>
// CHECK-NEXT:    %c = nn.conv2d %x, %w, %bias {name = "dw", {{.*}}group = 2 : i64}
// CHECK-NOT:     nn.batchnorm
func.func @depthwise_no_bias(%x: tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32> {
  %w = nn.weight "dw.w" {value = dense<[[[[1.0]]], [[[2.0]]]]> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
  %scale = nn.weight "bn.scale" {value = dense<1.0> : tensor<2xf32>} : tensor<2xf32>
  %bias = nn.weight "bn.bias" {value = dense<[1.0, 3.0]> : tensor<2xf32>} : tensor<2xf32>
  %mean = nn.weight "bn.mean" {value = dense<[2.0, 1.0]> : tensor<2xf32>} : tensor<2xf32>
  %var = nn.weight "bn.var" {value = dense<[3.0, 0.0]> : tensor<2xf32>} : tensor<2xf32>
  %c = nn.conv2d %x, %w {name = "dw", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 2 : i64} : (tensor<1x2x3x3xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x3x3xf32>
  %y = nn.batchnorm %c, %scale, %bias, %mean, %var {name = "bn1", epsilon = 1.0 : f64} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  func.return %y : tensor<1x2x3x3xf32>
}

// -----

// Gemm with transposed B (rows of B are output columns) and beta = 2:
// s = [2, 0.5], t = [-1, 0]; B' = [[2, 4], [1.5, 2]], C' = s * beta * C + t = [3, 1], beta' = 1.
// CHECK-LABEL: func.func @gemm_trans_b
// CHECK-NEXT:    %b = nn.weight "fc.b.bn" {value = dense<{{\[\[}}2.000000e+00, 4.000000e+00], [1.500000e+00, 2.000000e+00]]> : tensor<2x2xf32>} : tensor<2x2xf32>
// CHECK-NEXT:    %c = nn.weight "fc.c.bn" {value = dense<[3.000000e+00, 1.000000e+00]> : tensor<2xf32>} : tensor<2xf32>
// CHECK-NEXT:    %y = nn.gemm %a, %b, %c {name = "fc", trans_a = 0 : i64, trans_b = 1 : i64, alpha = 1.000000e+00 : f64, beta = 1.000000e+00 : f64}
// CHECK-NEXT:    func.return %y
func.func @gemm_trans_b(%a: tensor<1x2xf32>) -> tensor<1x2xf32> {
  %b = nn.weight "fc.b" {value = dense<[[1.0, 2.0], [3.0, 4.0]]> : tensor<2x2xf32>} : tensor<2x2xf32>
  %c = nn.weight "fc.c" {value = dense<1.0> : tensor<2xf32>} : tensor<2xf32>
  %scale = nn.weight "bn.scale" {value = dense<[2.0, 0.5]> : tensor<2xf32>} : tensor<2xf32>
  %bias = nn.weight "bn.bias" {value = dense<1.0> : tensor<2xf32>} : tensor<2xf32>
  %mean = nn.weight "bn.mean" {value = dense<[1.0, 2.0]> : tensor<2xf32>} : tensor<2xf32>
  %var = nn.weight "bn.var" {value = dense<0.0> : tensor<2xf32>} : tensor<2xf32>
  %y = nn.gemm %a, %b, %c {name = "fc", trans_a = 0 : i64, trans_b = 1 : i64, alpha = 1.0 : f64, beta = 2.0 : f64} : (tensor<1x2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  %z = nn.batchnorm %y, %scale, %bias, %mean, %var {name = "bn", epsilon = 1.0 : f64} : (tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  func.return %z : tensor<1x2xf32>
}

// -----

// Gemm without C, B not transposed (columns of B are output columns): s = [1, 2, 0.5],
// t = [1, 2, 3]; B' = [[1, 4, 1.5], [4, 10, 3]], C' = t.
// CHECK-LABEL: func.func @gemm_no_c
// CHECK-NEXT:    %b = nn.weight "fc.b.bn" {value = dense<{{\[\[}}1.000000e+00, 4.000000e+00, 1.500000e+00], [4.000000e+00, 1.000000e+01, 3.000000e+00]]> : tensor<2x3xf32>} : tensor<2x3xf32>
// CHECK-NEXT:    %bias = nn.weight "fc.bias.bn" {value = dense<[1.000000e+00, 2.000000e+00, 3.000000e+00]> : tensor<3xf32>} : tensor<3xf32>
// CHECK-NEXT:    %y = nn.gemm %a, %b, %bias {name = "fc", {{.*}}beta = 1.000000e+00 : f64}
func.func @gemm_no_c(%a: tensor<4x2xf32>) -> tensor<4x3xf32> {
  %b = nn.weight "fc.b" {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]> : tensor<2x3xf32>} : tensor<2x3xf32>
  %scale = nn.weight "bn.scale" {value = dense<[1.0, 2.0, 0.5]> : tensor<3xf32>} : tensor<3xf32>
  %bias = nn.weight "bn.bias" {value = dense<[1.0, 2.0, 3.0]> : tensor<3xf32>} : tensor<3xf32>
  %mean = nn.weight "bn.mean" {value = dense<0.0> : tensor<3xf32>} : tensor<3xf32>
  %var = nn.weight "bn.var" {value = dense<0.0> : tensor<3xf32>} : tensor<3xf32>
  %y = nn.gemm %a, %b {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<4x2xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  %z = nn.batchnorm %y, %scale, %bias, %mean, %var {name = "bn", epsilon = 1.0 : f64} : (tensor<4x3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>) -> tensor<4x3xf32>
  func.return %z : tensor<4x3xf32>
}

// -----

// Not folded: the conv result has a second user, which needs the un-normalized value.
// CHECK-LABEL: func.func @conv_two_users
// CHECK:         %c = nn.conv2d %x, %w {name = "conv1"
// CHECK-NEXT:    %y = nn.batchnorm %c, {{.*}} {name = "bn1"
// CHECK-NEXT:    func.return %y, %c
func.func @conv_two_users(%x: tensor<1x1x2x2xf32>) -> (tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>) {
  %w = nn.weight "w" {value = dense<1.0> : tensor<1x1x1x1xf32>} : tensor<1x1x1x1xf32>
  %p = nn.weight "p" {value = dense<1.0> : tensor<1xf32>} : tensor<1xf32>
  %c = nn.conv2d %x, %w {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %y = nn.batchnorm %c, %p, %p, %p, %p {name = "bn1", epsilon = 0.0 : f64} : (tensor<1x1x2x2xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<1x1x2x2xf32>
  func.return %y, %c : tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>
}

// -----

// Not folded: the batchnorm parameters are not weights, the conv already has a fused
// activation, or the batchnorm follows something other than a conv/gemm.
// CHECK-LABEL: func.func @not_foldable
// CHECK-COUNT-3: nn.batchnorm
func.func @not_foldable(%x: tensor<1x1x2x2xf32>, %scale: tensor<1xf32>) -> (tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>) {
  %w = nn.weight "w" {value = dense<1.0> : tensor<1x1x1x1xf32>} : tensor<1x1x1x1xf32>
  %p = nn.weight "p" {value = dense<1.0> : tensor<1xf32>} : tensor<1xf32>
  %c1 = nn.conv2d %x, %w {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %y1 = nn.batchnorm %c1, %scale, %p, %p, %p {name = "bn1", epsilon = 0.0 : f64} : (tensor<1x1x2x2xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<1x1x2x2xf32>
  %c2 = nn.conv2d %x, %w {name = "conv2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "relu"} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %y2 = nn.batchnorm %c2, %p, %p, %p, %p {name = "bn2", epsilon = 0.0 : f64} : (tensor<1x1x2x2xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<1x1x2x2xf32>
  %y3 = nn.batchnorm %x, %p, %p, %p, %p {name = "bn3", epsilon = 0.0 : f64} : (tensor<1x1x2x2xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<1x1x2x2xf32>
  func.return %y1, %y2, %y3 : tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>
}
