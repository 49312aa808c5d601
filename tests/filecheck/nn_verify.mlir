// RUN: layerloom-opt %s --split-input-file --verify-diagnostics | filecheck %s

// The nn verifiers reject ill-formed ops and name the op (its ONNX node name).

// CHECK: nn.conv2d 'conv1': bias must have one value per output channel
func.func @conv_bias(%x: tensor<1x1x2x2xf32>) -> tensor<1x2x2x2xf32> {
  %w = nn.weight "w" : tensor<2x1x1x1xf32>
  %b = nn.weight "b" : tensor<3xf32>
  %c = nn.conv2d %x, %w, %b {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>, tensor<3xf32>) -> tensor<1x2x2x2xf32>
  func.return %c : tensor<1x2x2x2xf32>
}

// -----

// CHECK: nn.conv2d 'conv2': result shape (1, 2, 2, 2) should be (1, 2, 1, 1)
func.func @conv_shape(%x: tensor<1x1x2x2xf32>) -> tensor<1x2x2x2xf32> {
  %w = nn.weight "w" : tensor<2x1x2x2xf32>
  %c = nn.conv2d %x, %w {name = "conv2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<2x1x2x2xf32>) -> tensor<1x2x2x2xf32>
  func.return %c : tensor<1x2x2x2xf32>
}

// -----

// CHECK: nn.conv2d 'conv3': leaky_relu needs act_alpha
func.func @fused_without_alpha(%x: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
  %w = nn.weight "w" : tensor<1x1x1x1xf32>
  %c = nn.conv2d %x, %w {name = "conv3", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "leaky_relu"} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  func.return %c : tensor<1x1x2x2xf32>
}

// -----

// CHECK: nn.gemm 'fc': gemm inner dimensions differ: 4 and 3
func.func @gemm(%a: tensor<1x4xf32>) -> tensor<1x2xf32> {
  %b = nn.weight "b" : tensor<3x2xf32>
  %y = nn.gemm %a, %b {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<1x4xf32>, tensor<3x2xf32>) -> tensor<1x2xf32>
  func.return %y : tensor<1x2xf32>
}

// -----

// CHECK: nn.batchnorm 'bn': parameter shape (3,) should be (2,)
func.func @batchnorm(%x: tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xf32> {
  %p = nn.weight "p" : tensor<2xf32>
  %q = nn.weight "q" : tensor<3xf32>
  %y = nn.batchnorm %x, %p, %p, %q, %p {name = "bn", epsilon = 1.0e-05 : f64} : (tensor<1x2x2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<3xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
  func.return %y : tensor<1x2x2x2xf32>
}

// -----

// CHECK: nn.reshape 'flat': cannot reshape (1, 2, 2, 2) (8 elements) to (1, 6)
func.func @reshape(%x: tensor<1x2x2x2xf32>) -> tensor<1x6xf32> {
  %y = nn.reshape %x {name = "flat"} : (tensor<1x2x2x2xf32>) -> tensor<1x6xf32>
  func.return %y : tensor<1x6xf32>
}

// -----

// CHECK: nn.transpose 't': perm (0, 0) is not a permutation of rank 2
func.func @transpose(%x: tensor<2x3xf32>) -> tensor<2x2xf32> {
  %y = nn.transpose %x {name = "t", perm = array<i64: 0, 0>} : (tensor<2x3xf32>) -> tensor<2x2xf32>
  func.return %y : tensor<2x2xf32>
}

// -----

// CHECK: nn.pool 'pool': kind 'sum' must be max or avg
func.func @pool(%x: tensor<1x1x4x4xf32>) -> tensor<1x1x2x2xf32> {
  %y = nn.pool %x {name = "pool", kind = "sum", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64} : (tensor<1x1x4x4xf32>) -> tensor<1x1x2x2xf32>
  func.return %y : tensor<1x1x2x2xf32>
}

// -----

// An inline weight value must have the weight's shape (checked before it is read).
// CHECK: nn.weight 'w': inline value shape (3,) differs from (2,)
func.func @weight_value() -> tensor<2xf32> {
  %w = nn.weight "w" {name = "w", value = dense<[1.0, 2.0, 3.0]> : tensor<3xf32>} : tensor<2xf32>
  func.return %w : tensor<2xf32>
}
