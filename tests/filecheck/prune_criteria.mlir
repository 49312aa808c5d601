// RUN: layerloom-opt %s --split-input-file -p 'prune{ratio=0.5 criterion=bn-gamma}' | filecheck %s --check-prefix=GAMMA
// RUN: layerloom-opt %s --split-input-file -p 'prune{ratio=0.5 criterion=l2}' | filecheck %s --check-prefix=L2

// bn-gamma ranks conv1's channels by |gamma| of the batchnorm after it, [1, 2, 3, 4]:
// channels 2 and 3 stay (L1 of the filters, [1, 3, 0.5, 2], would keep 1 and 3).
// GAMMA-LABEL: func.func @gamma
// GAMMA-NEXT:    %w1 = nn.weight "conv1.w.pruned" {value = dense<{{\[\[\[\[}}5.000000e-01]]], {{\[\[\[}}2.000000e+00]]]]> : tensor<2x1x1x1xf32>}
// GAMMA:         %g = nn.weight "bn1.gamma.pruned" {value = dense<[3.000000e+00, 4.000000e+00]> : tensor<2xf32>}
// GAMMA:         %w2 = nn.weight "conv2.w.pruned" {value = dense<{{\[\[\[\[}}3.000000e+00]], {{\[\[}}4.000000e+00]]]]> : tensor<1x2x1x1xf32>}
func.func @gamma(%x: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
  %w1 = nn.weight "conv1.w" {value = dense<[[[[1.0]]], [[[-3.0]]], [[[0.5]]], [[[2.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %g = nn.weight "bn1.gamma" {value = dense<[1.0, -2.0, 3.0, 4.0]> : tensor<4xf32>} : tensor<4xf32>
  %be = nn.weight "bn1.beta" {value = dense<0.5> : tensor<4xf32>} : tensor<4xf32>
  %mu = nn.weight "bn1.mean" {value = dense<0.0> : tensor<4xf32>} : tensor<4xf32>
  %var = nn.weight "bn1.var" {value = dense<1.0> : tensor<4xf32>} : tensor<4xf32>
  %w2 = nn.weight "conv2.w" {value = dense<[[[[1.0]], [[2.0]], [[3.0]], [[4.0]]]]> : tensor<1x4x1x1xf32>} : tensor<1x4x1x1xf32>
  %c1 = nn.conv2d %x, %w1 {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x2x2xf32>
  %n1 = nn.batchnorm %c1, %g, %be, %mu, %var {name = "bn1", epsilon = 0.0 : f64} : (tensor<1x4x2x2xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x2x2xf32>
  %c2 = nn.conv2d %n1, %w2 {name = "conv2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x2x2xf32>, tensor<1x4x1x1xf32>) -> tensor<1x1x2x2xf32>
  func.return %c2 : tensor<1x1x2x2xf32>
}

// -----

// L1 and L2 disagree: filter 0 = [1, 1, 1, 1] (L1 4, L2 2), filter 1 = [3, 0, 0, 0]
// (L1 3, L2 3). L2 keeps filter 1.
// L2-LABEL: func.func @norms
// L2-NEXT:    %w = nn.weight "w.pruned" {value = dense<{{\[\[\[\[}}3.000000e+00]], {{\[\[}}0.000000e+00]], {{\[\[}}0.000000e+00]], {{\[\[}}0.000000e+00]]]]> : tensor<1x4x1x1xf32>}
// L2-NEXT:    %v = nn.weight "v.pruned" {value = dense<6.000000e+00> : tensor<1x1x1x1xf32>}
func.func @norms(%x: tensor<1x4x1x1xf32>) -> tensor<1x1x1x1xf32> {
  %w = nn.weight "w" {value = dense<[[[[1.0]], [[1.0]], [[1.0]], [[1.0]]], [[[3.0]], [[0.0]], [[0.0]], [[0.0]]]]> : tensor<2x4x1x1xf32>} : tensor<2x4x1x1xf32>
  %v = nn.weight "v" {value = dense<[[[[5.0]], [[6.0]]]]> : tensor<1x2x1x1xf32>} : tensor<1x2x1x1xf32>
  %c = nn.conv2d %x, %w {name = "c", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x1x1xf32>, tensor<2x4x1x1xf32>) -> tensor<1x2x1x1xf32>
  %y = nn.conv2d %c, %v {name = "out", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x2x1x1xf32>, tensor<1x2x1x1xf32>) -> tensor<1x1x1x1xf32>
  func.return %y : tensor<1x1x1x1xf32>
}
